{#- salt role: the salt master host. Mapped in top.sls by I@rolestack:host:roles:salt. #}
include:
  - salt.dns
  - salt.ca
  - salt.rsync
  - salt.srv
  - salt.jumpbox
