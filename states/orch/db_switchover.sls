{#- Orchestrate (salt-run state.orchestrate orch.db_switchover), the trigger for a commit that moved masterdb in
    the inventory: when the host the inventory names masterdb is not the running primary, switch the primary to it
    (salt-run db.switchover <it> update_inventory=False highstate=False: the commit is there already), then
    highstate every minion so /etc/hosts, DNS, certificates and the db role follow. See docs/roles/db.md. #}
{%- set db = salt['saltutil.runner']('db.status') %}
{%- if db is not mapping %}
{{ raise("salt-run db.status failed: " ~ db) }}
{%- endif %}
{%- set wanted = db.masterdb %}
{%- set running = db.primary %}

{%- if not running %}

{#- nothing to switch from: a dead primary is a failover, never a highstate #}
db-switchover:
  test.fail_without_changes:
    - name: {{ ("no running primary (" ~ (db.problems | join('; ')) ~ "): a switchover needs one; if the primary "
               ~ "died: salt-run db.failover") | json }}
    - failhard: True

{%- elif running != wanted %}

db-switchover:
  salt.runner:
    - name: db.switchover
    - new: {{ wanted | json }}
    - update_inventory: False
    - highstate: False
    - failhard: True

{%- else %}

db-switchover:
  test.succeed_without_changes:
    - name: {{ (wanted ~ " is the running primary already") | json }}

{%- endif %}

db-switchover-highstate:
  salt.state:
    - tgt: '*'
    - highstate: True
    - require:
      - db-switchover
