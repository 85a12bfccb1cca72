{#- The master's bootstrap (bootstrap/master.sh runs it with salt-call --local): the salt-master's configuration,
    its own minion, and /srv in git. docs/roles/salt.md, "Bootstrap". #}
include:
  - bootstrap.master
  - bootstrap.minion
  - salt.srv
