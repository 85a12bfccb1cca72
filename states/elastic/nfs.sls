{#- elastic role, NFS share of ElasticSearch snapshots (docs/roles/backup.md, "NFS share"): the elasticsearch
    account with the fixed uid/gid the backup host's export squashes to, the share mounted (nfs4), and path.repo in
    ElasticSearch's configuration. Everything comes from rolestack:elastic:nfs (derived in _utils/rolestack_nfs.py). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('elastic', "elastic.nfs applies only to hosts with role elastic in the inventory, not to "
                 ~ grains['id']) }}
{%- set nfs = rs.elastic.get('nfs') %}

{%- if not nfs %}
elastic-nfs-no-backup-host:
  test.show_notification:
    - text: "nothing to mount: the inventory has no backup host with a known address"
{%- else %}
elastic-nfs-packages:
  pkg.installed:
    - pkgs: {{ nfs.packages | json }}

{#- before ElasticSearch's package: it keeps an existing elasticsearch account (and its numbers) #}
elastic-nfs-group:
  group.present:
    - name: {{ nfs.group }}
    - gid: {{ nfs.gid }}
    - system: True

elastic-nfs-user:
  user.present:
    - name: {{ nfs.user }}
    - uid: {{ nfs.uid }}
    - gid: {{ nfs.gid }}
    - system: True
    - createhome: False
    - shell: /usr/sbin/nologin
    - require:
      - group: elastic-nfs-group

elastic-nfs-mount:
  mount.mounted:
    - name: {{ nfs.mount_point }}
    - device: {{ nfs.device }}
    - fstype: {{ nfs.fstype }}
    - opts: {{ nfs.opts }}
    - mkmnt: True
    - persist: True
    - require:
      - pkg: elastic-nfs-packages
      - user: elastic-nfs-user

{#- path.repo: read at start, so a change needs a (rolling) restart of ElasticSearch, left to the operator
    (docs/roles/backup.md). Only once ElasticSearch is installed (its package owns the file): checked while
    rendering, not by an onlyif (tests/unit/test_sls_run_checks.py) #}
{%- if salt['file.file_exists'](nfs.es_config) %}
elastic-nfs-path-repo:
  file.blockreplace:
    - name: {{ nfs.es_config }}
    - marker_start: "# BEGIN rolestack: NFS share of snapshots (managed by salt, states/elastic/nfs.sls)"
    - marker_end: "# END rolestack: NFS share of snapshots"
    - content: {{ nfs.path_repo | json }}
    - append_if_not_found: True
    - require:
      - mount: elastic-nfs-mount
{%- else %}
elastic-nfs-path-repo:
  test.show_notification:
    - text: "{{ nfs.es_config }} is absent (ElasticSearch is not installed yet): path.repo is set by the first run after"
{%- endif %}
{%- endif %}
