{#- The salt-master's configuration on the salt host (docs/roles/salt.md, "Bootstrap"). The peer ACL is derived
    from the inventory at the tip of /srv/git/pillar.git by the inventory util (inventory.master_acl); key
    acceptance is by fingerprint only (docs/procedures.md): no auto_accept, no open_mode, no autosign. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('salt', "bootstrap.master applies only to the host with role salt in the inventory, not to "
                 ~ grains['id']) }}
{%- set boot = salt['pillar.get']('rolestack_bootstrap', {}) %}
{%- set bin = boot.get('bin') or salt['file.dirname'](grains['pythonexecutable']) %}
{%- set served = '/srv/salt/current' %}
{#- the inventory holds secrets: never logged (output_loglevel quiet) #}
{%- set inventory = salt['cmd.run_stdout']('git --git-dir=/srv/git/pillar.git show main:inventory.yaml',
                                           python_shell=False, output_loglevel='quiet') %}

bootstrap-master-config:
  file.serialize:
    - name: /etc/salt/master.d/rolestack.conf
    - serializer: yaml
    - mode: '0644'
    - makedirs: True
    - dataset:
        # the master's own id, fixed: salt 3008 names the master's key pair after it (pki/master/<id>.pem, master.pem a
        # link to it) and, when unset, derives it from the host's FQDN, which the salt role sets later (the base role's
        # domain): the next restart then looked for another key, made a new one, and every minion refused the master
        id: {{ grains['id'] }}
        # the trees /srv/git's post-receive hooks keep current (salt.srv): the states (a clone of rolestack,
        # whose loader directories the master loads directly: no saltutil.sync_all on the master) and the pillar
        file_roots: {base: ['{{ served }}/states', '{{ served }}']}
        pillar_roots: {base: ['/srv/pillar/current']}
        ext_pillar:
          - rolestack:
              git:
                repo: /srv/git/pillar.git
                ref: main
                path: inventory.yaml
{%- for kind in ['module', 'states', 'pillar', 'runner', 'utils'] %}
        {{ kind }}_dirs: ['{{ served }}/_{{ kind }}{{ 's' if kind in ['module', 'runner'] else '' }}']
{%- endfor %}
        # keys are accepted by their sha256 fingerprint only: salt-run minion_key.admit <id> <fingerprint>
        auto_accept: False
        open_mode: False

{#- least privilege between minions; re-run the bootstrap after a change of the db or salt hosts #}
bootstrap-master-peer:
  file.serialize:
    - name: /etc/salt/master.d/rolestack-peer.conf
    - serializer: yaml
    - mode: '0644'
    - makedirs: True
    - dataset: {{ salt['inventory.master_acl'](text=inventory) | json }}

{#- no key is ever accepted by rule: neither an autosign file nor a shared grain token #}
bootstrap-master-no-autosign:
  file.absent:
    - names:
      - /etc/salt/autosign.conf
      - /etc/salt/autosign_grains

bootstrap-master-unit:
  file.managed:
    - name: /etc/systemd/system/salt-master.service
    - source: salt://bootstrap/files/salt.service.jinja
    - template: jinja
    - context: {daemon: salt-master, bin: {{ bin }}, description: The Salt Master Server}
    - mode: '0644'
{%- if boot.get('start', True) %}

bootstrap-master-service:
  service.running:
    - name: salt-master
    - enable: True
    - watch:
      - file: bootstrap-master-config
      - file: bootstrap-master-peer
      - file: bootstrap-master-unit
{%- endif %}
