{#- backup role, NFS share of ElasticSearch snapshots (docs/roles/backup.md, "NFS share"): one NFSv4 export of the
    snapshot directory, read-write for the elastic hosts only, root squashed to the fixed elasticsearch uid/gid.
    Everything comes from rolestack:backup:nfs (derived in _utils/rolestack_nfs.py: the server, ganesha or kernel,
    its packages, service and configuration's text, the account, the directory). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('backup', "backup.nfs applies only to the host with role backup in the inventory (the NFS "
                 ~ "server of ElasticSearch snapshots), not to " ~ grains['id']) }}
{%- set nfs = rs.backup.get('nfs') %}

{%- if not nfs %}
{#- the export is bound to the host's address: it waits for the mine to report it (the next run) #}
backup-nfs-pending:
  test.show_notification:
    - text: "no NFS export yet: the address of {{ grains['id'] }} is not known yet (rolestack:pending)"
{%- else %}
{#- an NFSv4-only ganesha needs none of these; rpcbind would listen on port 111 on every address. Masked before
    the packages are installed (their installation would start them) #}
{%- for unit in nfs.masked %}

backup-nfs-mask-{{ unit }}:
  file.symlink:
    - name: /etc/systemd/system/{{ unit }}
    - target: /dev/null
    - force: True
    - require_in:
      - pkg: backup-nfs-packages

backup-nfs-stop-{{ unit }}:
  rolestack_service.dead:
    - name: {{ unit }}
    - require:
      - file: backup-nfs-mask-{{ unit }}
      - pkg: backup-nfs-packages
{%- endfor %}

backup-nfs-packages:
  pkg.installed:
    - pkgs: {{ nfs.packages | json }}

backup-nfs-group:
  group.present:
    - name: {{ nfs.group }}
    - gid: {{ nfs.gid }}
    - system: True

backup-nfs-user:
  user.present:
    - name: {{ nfs.user }}
    - uid: {{ nfs.uid }}
    - gid: {{ nfs.gid }}
    - system: True
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: backup-nfs-group

backup-nfs-export-dir:
  file.directory:
    - name: {{ nfs.path }}
    - user: {{ nfs.user }}
    - group: {{ nfs.group }}
    - mode: '{{ nfs.mode }}'
    - makedirs: True
    - require:
      - user: backup-nfs-user

backup-nfs-config:
  file.managed:
    - name: {{ nfs.config_file }}
    - contents: {{ nfs.config | json }}
    - user: root
    - group: root
    - mode: '0644'
    - makedirs: True
    - require:
      - pkg: backup-nfs-packages

{#- a new configuration: ganesha is restarted (its clients reclaim their state), the kernel server reloaded
    (exportfs -r) #}
backup-nfs-service:
  rolestack_service.running:
    - name: {{ nfs.service }}
    - enable: True
    - reload: {{ nfs.reload | json }}
    - require:
      - file: backup-nfs-export-dir
    - watch:
      - file: backup-nfs-config
{%- endif %}
