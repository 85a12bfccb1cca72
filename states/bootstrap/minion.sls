{#- The master's own minion: its id is the salt host's inventory name, its master this host; its key is accepted
    by copying it into the master's key store (the same machine: no fingerprint to compare). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('salt', "bootstrap.minion applies only to the host with role salt in the inventory, not to "
                 ~ grains['id']) }}
{%- set boot = salt['pillar.get']('rolestack_bootstrap', {}) %}
{%- set bin = boot.get('bin') or salt['file.dirname'](grains['pythonexecutable']) %}
{%- set pki = '/etc/salt/pki/minion' %}

bootstrap-minion-config:
  file.serialize:
    - name: /etc/salt/minion.d/bootstrap.conf
    - serializer: yaml
    - mode: '0644'
    - makedirs: True
    - dataset:
        id: {{ grains['id'] }}
        master: 127.0.0.1
        # the served checkout of rolestack: the pillar repository's pre-receive hook validates with it (salt.srv)
        rolestack_project: /srv/salt/current

bootstrap-minion-key:
  file.directory:
    - name: {{ pki }}
    - mode: '0700'
    - makedirs: True
  cmd.run:
    - name: {{ bin }}/salt-key --gen-keys=minion --gen-keys-dir={{ pki }} --log-file=/dev/null
    - creates: {{ pki }}/minion.pem
    - require:
      - file: bootstrap-minion-key

bootstrap-minion-accepted:
  file.managed:
    - name: /etc/salt/pki/master/minions/{{ grains['id'] }}
    - source: {{ pki }}/minion.pub
    - mode: '0644'
    - makedirs: True
    - require:
      - cmd: bootstrap-minion-key

bootstrap-minion-unit:
  file.managed:
    - name: /etc/systemd/system/salt-minion.service
    - source: salt://bootstrap/files/salt.service.jinja
    - template: jinja
    - context: {daemon: salt-minion, bin: {{ bin }}, description: The Salt Minion}
    - mode: '0644'
{%- if boot.get('start', True) %}

bootstrap-minion-service:
  service.running:
    - name: salt-minion
    - enable: True
    - require:
      - file: bootstrap-minion-accepted
    - watch:
      - file: bootstrap-minion-config
      - file: bootstrap-minion-unit
{%- endif %}
