{#- backup role (docs/roles/backup.md): the engine's directories and the timer that pulls every source into a dated
    snapshot (salt-call rolestack_backup.run: _modules/rolestack_backup.py), then the NFS share of ElasticSearch
    snapshots (backup.nfs). Everything comes from rolestack:backup, derived in _utils/rolestack_backup.py: the
    sources with their paths, the retention, the schedule and the units' texts. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('backup', "the backup role applies only to the host with role backup in the inventory, not to "
                 ~ grains['id']) }}
{%- set backup = rs.backup %}
{%- set units = '/etc/systemd/system/' %}
include:
  - backup.nfs

backup-packages:
  pkg.installed:
    - pkgs: [rsync]

{#- 0700: the snapshots hold every host's /etc (keys, secrets): root only #}
backup-root:
  file.directory:
    - name: {{ backup.root }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

backup-log-dir:
  file.directory:
    - name: {{ backup.log_dir }}
    - user: root
    - group: adm
    - mode: '0750'
    - makedirs: True

backup-service-unit:
  file.managed:
    - name: {{ units ~ backup.service_unit }}
    - contents: {{ backup.service | json }}
    - user: root
    - group: root
    - mode: '0644'

backup-timer-unit:
  file.managed:
    - name: {{ units ~ backup.timer_unit }}
    - contents: {{ backup.timer | json }}
    - user: root
    - group: root
    - mode: '0644'

{#- only the timer runs: the service is its oneshot (systemd never starts it twice at once, and the engine's lock
    refuses a run started by hand beside it). A changed unit is restarted (salt's service module reloads systemd
    first when a unit file changed) #}
backup-timer:
  rolestack_service.running:
    - name: {{ backup.timer_unit }}
    - enable: True
    - require:
      - pkg: backup-packages
      - file: backup-root
      - file: backup-log-dir
    - watch:
      - file: backup-service-unit
      - file: backup-timer-unit
