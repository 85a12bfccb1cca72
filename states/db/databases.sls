{#- db role, application databases (docs/roles/db.md, "Application databases"): the inventory's databases, their
    accounts (one per user and address of a host with one of the user's roles) and exactly their privileges.
    Created on masterdb only, once it takes writes: replicas get every database, account and grant by replication.
    A database removed from the inventory is never dropped (its data stays); accounts of a managed user at an
    address no longer derived are dropped. #}
{%- set rs = salt['pillar.get']('rolestack', {}) %}
{%- set db = rs.db %}

include:
  - db.replication

{%- if db.is_master %}
{%- set passwords = rs.get('secrets', {}).get('db_users', {}) %}

{%- for database, spec in db.get('databases', {}) | dictsort %}
db-database-{{ database }}:
  mariadb_replication.database_present:
    - name: {{ database | json }}
    - character_set: {{ spec.character_set | json }}
    - collate: {{ spec.collate | json }}
    - require:
      - mariadb_replication: db-replication-writable
{%- endfor %}

{%- for user, spec in db.get('users', {}) | dictsort %}
{%- for address in spec.hosts %}
db-user-{{ user }}-{{ address }}:
  mariadb_replication.user_present:
    - name: {{ user | json }}
    - password: {{ passwords[user] | json }}
    - host: {{ address | json }}
    - ssl_require: {{ 'SSL' if spec.ssl else 'NONE' }}
    - require:
      - mariadb_replication: db-replication-writable
{%- for database, privileges in spec.grants | dictsort %}

db-grant-{{ user }}-{{ address }}-{{ database }}:
  mariadb_replication.grant_present:
    - name: {{ user | json }}
    - host: {{ address | json }}
    - database: {{ database | json }}
    - privileges: {{ privileges | json }}
    - exact: True
    - require:
      - mariadb_replication: db-user-{{ user }}-{{ address }}
      - mariadb_replication: db-database-{{ database }}
{%- endfor %}
{%- endfor %}

{#- the user's accounts at addresses no longer derived: the host left the inventory or lost the role #}
db-user-{{ user }}-elsewhere:
  mariadb_replication.user_absent_except:
    - name: {{ user | json }}
    - hosts: {{ spec.hosts | json }}
    - require:
      - mariadb_replication: db-replication-writable
{%- endfor %}
{%- endif %}
