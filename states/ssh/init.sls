{#- ssh on every host (docs/roles/salt.md, "Jump box"): the operators' accounts (rolestack:ssh:operators), sshd
    hardened (keys only, no root login) and, on every host but the salt host, admitting connections from the salt
    host only (AllowUsers *@<its address>; the host firewall, states/firewall, drops port 22 from anyone else).
    sshd's file is checked by sshd -t before it replaces the live one, and sshd is reloaded, never restarted, when
    it changed. Included by the base role. #}
{%- from 'rolestack.jinja' import rs with context %}
{%- set ssh = rs.get('ssh') or {} %}
{%- set operators = ssh.get('operators') or {} %}
{%- set group = 'rolestack-operators' %}
{%- set sudoers = operators | dictsort | selectattr('1.sudo') | map(attribute='0') | list %}

ssh-server-pkg:
  pkg.installed:
    - name: openssh-server

ssh-operators-group:
  group.present:
    - name: {{ group }}
    - system: True

{%- for name, operator in operators | dictsort %}
{%- set home = '/home/' ~ name %}
ssh-operator-{{ name }}:
  user.present:
    - name: {{ name }}
    - home: {{ home }}
    - createhome: True
    - shell: /bin/bash
    - password: '*'
    - groups:
      - {{ group }}
    - require:
      - group: ssh-operators-group

ssh-operator-{{ name }}-dir:
  file.directory:
    - name: {{ home }}/.ssh
    - user: {{ name }}
    - group: {{ name }}
    - mode: '0700'
    - require:
      - user: ssh-operator-{{ name }}

ssh-operator-{{ name }}-keys:
  file.managed:
    - name: {{ home }}/.ssh/authorized_keys
    - user: {{ name }}
    - group: {{ name }}
    - mode: '0600'
    - contents: {{ operator.ssh_keys | join('\n') | json }}
    - require:
      - file: ssh-operator-{{ name }}-dir
{%- endfor %}

{#- an operator removed from the inventory: the account goes (its home stays, for the record) #}
{%- for name in (salt['group.info'](group) or {}).get('members', []) | sort if name not in operators %}
ssh-operator-{{ name }}-removed:
  user.absent:
    - name: {{ name }}
{%- endfor %}

{#- sudo, for the operators who declared it (no password: the accounts have none) #}
{%- if sudoers %}
ssh-sudo-pkg:
  pkg.installed:
    - name: sudo

ssh-operators-sudoers:
  file.managed:
    - name: /etc/sudoers.d/rolestack-operators
    - mode: '0440'
    - check_cmd: /usr/sbin/visudo -cf
    - contents: |
        # managed by salt (rolestack): the operators whose inventory entry says sudo: true
{%- for name in sudoers %}
        {{ name }} ALL=(ALL:ALL) NOPASSWD: ALL
{%- endfor %}
    - require:
      - pkg: ssh-sudo-pkg
{%- else %}
ssh-operators-sudoers:
  file.absent:
    - name: /etc/sudoers.d/rolestack-operators
{%- endif %}

{#- sshd -t (the check below) needs its privilege separation directory, which only a running sshd has #}
ssh-privsep-dir:
  file.directory:
    - name: /run/sshd
    - mode: '0755'

{#- first in sshd_config.d (00-): sshd keeps the first value it reads, so a later drop-in cannot loosen these. The
    text is derived by the ext_pillar (rolestack_jumpbox.sshd_config_text): no template for the minion to render #}
ssh-sshd-config:
  file.managed:
    - name: /etc/ssh/sshd_config.d/00-rolestack.conf
    - mode: '0644'
    - check_cmd: /usr/sbin/sshd -t -f
    - contents: {{ ssh.sshd_config | json }}
    - require:
      - pkg: ssh-server-pkg
      - file: ssh-privsep-dir

base-sshd-banner:
  file.managed:
    - name: /etc/ssh/sshd_config.d/rolestack-banner.conf
    - makedirs: True
    - mode: '0644'
    - check_cmd: /usr/sbin/sshd -t -f
    - contents: |
        # managed by salt (rolestack base role): show the environment level before login
        Banner /etc/issue.net
    - require:
      - pkg: ssh-server-pkg
      - file: ssh-privsep-dir

{#- reload (Debian's unit: sshd -t of the whole configuration, then SIGHUP): sessions in progress stay up #}
ssh-service:
  rolestack_service.running:
    - name: ssh
    - enable: True
    - reload: True
    - watch:
      - file: ssh-sshd-config
      - file: base-sshd-banner
