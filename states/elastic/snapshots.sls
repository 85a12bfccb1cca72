{#- elastic role, snapshots (docs/roles/elastic.md): the snapshot repository on the backup host's NFS share,
    registered through ElasticSearch's HTTP API (rolestack_elastic.repository_registered: GET first, PUT only when
    it differs), and on one member of each cluster (rolestack:elastic:snapshots:scheduler) a daily systemd timer
    that takes a dated snapshot and prunes by retention (salt-call rolestack_elastic.scheduled). Everything comes
    from rolestack:elastic:snapshots, derived from the inventory's elastic key in _utils/rolestack_elastic.py.
    Needs: ElasticSearch answering on the pillar's url, and the share mounted at the pillar's mount and listed
    in path.repo on every node of the cluster (states/elastic/nfs.sls, applied first; docs/roles/backup.md). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('elastic', "elastic.snapshots applies only to hosts with role elastic in the inventory, not to "
                 ~ grains['id']) }}
{%- set snapshots = rs.elastic.snapshots %}
{%- set units = '/etc/systemd/system/' %}

elastic-snapshot-repository:
  rolestack_elastic.repository_registered:
    - name: {{ snapshots.repository }}
    - location: {{ snapshots.location }}
    - compress: {{ snapshots.compress }}
    - url: {{ snapshots.url }}
{%- if snapshots.scheduler %}

elastic-snapshot-service:
  file.managed:
    - name: {{ units ~ snapshots.service_unit }}
    - contents: {{ snapshots.service | json }}
    - user: root
    - group: root
    - mode: '0644'

elastic-snapshot-timer-unit:
  file.managed:
    - name: {{ units ~ snapshots.timer_unit }}
    - contents: {{ snapshots.timer | json }}
    - user: root
    - group: root
    - mode: '0644'

{#- a changed unit is restarted (salt's service module reloads systemd first when a unit file changed) #}
elastic-snapshot-timer:
  rolestack_service.running:
    - name: {{ snapshots.timer_unit }}
    - enable: True
    - require:
      - rolestack_elastic: elastic-snapshot-repository
    - watch:
      - file: elastic-snapshot-service
      - file: elastic-snapshot-timer-unit
{%- else %}

{#- another member of the cluster runs the timer: one scheduled snapshot a day per cluster #}
elastic-snapshot-timer:
  rolestack_service.dead:
    - name: {{ snapshots.timer_unit }}
    - enable: False

elastic-snapshot-units-absent:
  file.absent:
    - names:
      - {{ units ~ snapshots.timer_unit }}
      - {{ units ~ snapshots.service_unit }}
    - require:
      - rolestack_service: elastic-snapshot-timer
{%- endif %}
