{#- backup role, a source host's side (docs/roles/backup.md, "Source hosts' daemon"): the rsync daemon the backup host
    pulls from, on port 8873 of this host's own address, read-only module rolestack-backup (and the write-only
    rolestack-restore), hosts allow = the backup host, this host's own derived secret; on a db host, the oneshot
    rolestack-db-backup.service that the read-only module's pre-xfer exec starts before each pull (a consistent,
    prepared mariabackup into /var/backups/rolestack/db). Everything comes from rolestack:backup:source (derived in
    _utils/rolestack_backup.py: source_pillar) and secrets.rsync_backup_source. Every host but the backup host. #}
{%- from 'rolestack.jinja' import rs with context %}
{%- set source = (rs.get('backup') or {}).get('source') %}

{%- if not source %}
{#- no backup host with a known address, or this host's own address is still pending (or it is the backup host) #}
backup-source-pending:
  test.show_notification:
    - text: "no backup daemon on {{ grains['id'] }}: it is no backup source yet (no backup host with a known
        address, or this host's address is pending: rolestack:pending)"
{%- else %}
{%- set secret = (rs.get('secrets') or {}).get('rsync_backup_source') %}

backup-source-rsync:
  pkg.installed:
    - name: rsync

backup-source-secrets:
  file.managed:
    - name: {{ source.secrets_file }}
    - contents: {{ secret | json }}
    - user: root
    - group: root
    - mode: '0600'
    - show_changes: False

{#- the daemon re-reads its configuration at each connection (rsyncd.conf(5): "The file is re-read on each client
    connection"): a change needs no restart #}
backup-source-config:
  file.managed:
    - name: {{ source.config_file }}
    - contents: {{ source.config | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - file: backup-source-secrets
{%- if source.db_backup %}

{#- started by the read-only module's pre-xfer exec (systemctl start: it waits, systemd never runs two at once,
    the journal keeps the log); a failure refuses the pull, and the backup host keeps its previous snapshot #}
backup-source-db-backup-unit:
  file.managed:
    - name: {{ source.db_backup.unit_file }}
    - contents: {{ source.db_backup.unit | json }}
    - user: root
    - group: root
    - mode: '0644'
    - require_in:
      - rolestack_service: backup-source-daemon

backup-source-db-backup-dir:
  file.directory:
    - name: {{ source.db_backup.dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True
    - require_in:
      - rolestack_service: backup-source-daemon
{%- endif %}

backup-source-unit:
  file.managed:
    - name: {{ source.unit_file }}
    - contents: {{ source.unit | json }}
    - user: root
    - group: root
    - mode: '0644'

{#- restarted when its unit changes (the address, the port); bound to this host's own address only #}
backup-source-daemon:
  rolestack_service.running:
    - name: {{ source.service }}
    - enable: True
    - require:
      - pkg: backup-source-rsync
      - file: backup-source-config
    - watch:
      - file: backup-source-unit
{%- endif %}
