{#- db role: the MariaDB server from Debian's packages, configured from the inventory. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('db', "no rolestack:db pillar for " ~ grains['id'] ~ ": the db role applies only to hosts with role db") }}
{%- set db = rs.db %}
{%- if not rs.host.address or not db.server_id %}
{{ raise("db host " ~ grains['id'] ~ " has no address yet (inventory or mine): cannot bind or derive server_id") }}
{%- endif %}

include:
  - db.certs

db-server-packages:
  pkg.installed:
    - pkgs:
      - mariadb-server
      - mariadb-client
      - mariadb-backup

db-server-config:
  file.managed:
    - name: /etc/mysql/mariadb.conf.d/60-rolestack.cnf
    - source: salt://db/files/rolestack.cnf.jinja
    - template: jinja
    - mode: '0644'
    - context:
        host: {{ rs.host | json }}
        db: {{ db | json }}
        ssl_dir: /etc/mysql/ssl
    - require:
      - pkg: db-server-packages

db-server-service:
  rolestack_service.running:
    - name: mariadb
    - enable: True
    - require:
      - rolestack_x509: db-certs-server-cert
      - rolestack_x509: db-certs-ca
    - watch:
      - file: db-server-config
