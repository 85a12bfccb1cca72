{#- salt role, rsync source: the rsync daemon under xinetd serves the inventory's rsync modules to the hosts whose
    roles may pull them (docs/roles/salt.md, "rsync modules"). Everything comes from rolestack:rsync_server
    (derived in _utils/rolestack_rsync.py: rsyncd.conf's text, each module's directory, hosts allow, README) and
    the salt host's secrets.rsync_modules (one secret per module). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('salt', "salt.rsync applies only to the host with role salt in the inventory (the rsync source), "
                 ~ "not to " ~ grains['id']) }}
{%- set server = rs.get('rsync_server') %}
{%- set xinetd_entry = '/etc/xinetd.d/rsync' %}

{%- if not server %}
{#- no module declared: nothing is served (a former entry is removed and xinetd told so) #}
salt-rsync-off:
  file.absent:
    - names:
      - {{ xinetd_entry }}
      - /etc/rsyncd.conf
      - /etc/rsyncd.secrets

salt-rsync-xinetd-reload:
  module.run:
    - service.reload:
      - name: xinetd
    - onchanges:
      - file: salt-rsync-off
{%- else %}
{%- set secrets = (rs.get('secrets') or {}).get('rsync_modules') or {} %}
{%- set lines = [] %}
{%- for name, module in server.modules | dictsort %}
{%-   do lines.append(module.auth_user ~ ':' ~ secrets[name]) %}
{%- endfor %}

salt-rsync-pkgs:
  pkg.installed:
    - pkgs:
      - rsync
      - xinetd

{#- Debian's rsync.service starts a standalone daemon as soon as /etc/rsyncd.conf exists: it would hold port 873
    that xinetd listens on #}
salt-rsync-standalone-off:
  rolestack_service.dead:
    - name: rsync
    - enable: False
    - require:
      - pkg: salt-rsync-pkgs

salt-rsync-secrets:
  file.managed:
    - name: {{ server.secrets_file }}
    - contents: {{ lines | json }}
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False
    - require:
      - pkg: salt-rsync-pkgs

{#- read by rsync at each connection: a change needs no reload #}
salt-rsync-config:
  file.managed:
    - name: {{ server.config_file }}
    - contents: {{ server.config | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: salt-rsync-secrets
{%- for name, module in server.modules | dictsort %}

salt-rsync-module-{{ name }}:
  file.directory:
    - name: {{ module.path }}
    - user: {{ 'root' if module.read_only else server.user }}
    - group: {{ 'root' if module.read_only else server.group }}
    - mode: '0755'
    - makedirs: True

salt-rsync-module-{{ name }}-readme:
  file.managed:
    - name: {{ module.path }}/README.md
    - contents: {{ module.readme | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: salt-rsync-module-{{ name }}
{%- endfor %}

salt-rsync-xinetd-entry:
  file.managed:
    - name: {{ xinetd_entry }}
    - source: salt://salt/files/xinetd-rsync
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: salt-rsync-pkgs
      - rolestack_service: salt-rsync-standalone-off

{#- a native unit in place of the one generated from the init script (whose "is it enabled?" costs ~0.2 s) #}
salt-rsync-xinetd-unit:
  file.managed:
    - name: /etc/systemd/system/xinetd.service
    - source: salt://salt/files/xinetd.service
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - pkg: salt-rsync-pkgs

{#- the xinetd running under the generated unit is stopped before the native one starts (systemd reloaded first:
    salt's service functions do it when a unit file changed) #}
salt-rsync-xinetd-unit-switch:
  module.run:
    - service.stop:
      - name: xinetd
    - onchanges:
      - file: salt-rsync-xinetd-unit

{#- xinetd reloads (SIGHUP) when its entry changed: the new entry is listened on without dropping the others #}
salt-rsync-xinetd:
  rolestack_service.running:
    - name: xinetd
    - enable: True
    - reload: True
    - require:
      - file: salt-rsync-config
      - module: salt-rsync-xinetd-unit-switch
    - watch:
      - file: salt-rsync-xinetd-entry
{%- endif %}
