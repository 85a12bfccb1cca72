{#- db role, replication: masterdb takes writes and holds the replication accounts; every other db host is a
    read-only replica of it over TLS (server certificate verified, client certificate required). #}
{%- set rs = salt['pillar.get']('rolestack', {}) %}
{%- set db = rs.db %}
{%- set ssl_dir = '/etc/mysql/ssl' %}
{%- set master = db.masterdb %}

include:
  - db.server

{%- if db.is_master %}

{#- never two primaries: refused (naming salt-run db.switchover / db.failover) while this host still replicates or
    another db host takes writes; the primary moves through the db runner, never by a highstate #}
db-replication-writable:
  mariadb_replication.read_only:
    - name: masterdb
    - enabled: False
    - peers: {{ db.peers | json }}
    - peer_password: {{ rs.secrets.replication_password | json }}
    - ssl_ca: {{ ssl_dir }}/ca.pem
    - ssl_cert: {{ ssl_dir }}/client.pem
    - ssl_key: {{ ssl_dir }}/client.key
    - masterdb: {{ master.name | json }}
    - require:
      - rolestack_service: db-server-service
      - rolestack_x509: db-certs-client-cert

{#- one account per db host, from its address only; it must present a certificate from the platform's CA.
    Accounts replicate to every replica, so an old primary finds its account on the new one. Written only once
    this host is the writable primary: written on a host that still replicates they would fork its data. #}
{%- for peer in db.peers if peer.address %}
db-replication-account-{{ peer.name }}:
  mariadb_replication.replication_user_present:
    - name: repl
    - password: {{ rs.secrets.replication_password | json }}
    - host: {{ peer.address }}
    - ssl_require: X509
    - require:
      - mariadb_replication: db-replication-writable
{%- endfor %}

{#- the accounts of hosts that left the inventory (or the db role) are dropped; kept all while a db host's address
    is unknown (not yet in the mine): its account may exist #}
{%- if not db.peers | rejectattr('address') | list %}
db-replication-account-elsewhere:
  mariadb_replication.user_absent_except:
    - name: repl
    - hosts: {{ db.peers | map(attribute='address') | list | json }}
    - require:
      - mariadb_replication: db-replication-writable
{%- endif %}

{%- else %}

{#- a running primary the inventory no longer names masterdb stays writable (the state fails, naming the runner)
    unless another db host takes writes: demoting the only primary would leave none #}
db-replication-read-only:
  mariadb_replication.read_only:
    - name: replica
    - enabled: True
    - peers: {{ db.peers | json }}
    - peer_password: {{ rs.secrets.replication_password | json }}
    - ssl_ca: {{ ssl_dir }}/ca.pem
    - ssl_cert: {{ ssl_dir }}/client.pem
    - ssl_key: {{ ssl_dir }}/client.key
    - masterdb: {{ master.name | json }}
    - require:
      - rolestack_service: db-server-service
      - rolestack_x509: db-certs-client-cert

{#- a fresh replica is provisioned from masterdb: source_minion is masterdb's minion id, which is its inventory
    name (never its FQDN; mariadb_replication matches it exactly against rolestack:db:peers names) #}
db-replication-replica:
  mariadb_replication.replica_configured:
    - name: {{ master.fqdn }}
    - master_user: repl
    - master_password: {{ rs.secrets.replication_password | json }}
    - ssl_ca: {{ ssl_dir }}/ca.pem
    - ssl_cert: {{ ssl_dir }}/client.pem
    - ssl_key: {{ ssl_dir }}/client.key
    - source_minion: {{ master.name }}
    - replica_address: {{ rs.host.address }}
    - require:
      - mariadb_replication: db-replication-read-only
      - rolestack_x509: db-certs-client-cert

{#- reports (never changes): fails the run when replication is broken or lags beyond the inventory's limit #}
db-replication-health:
  mariadb_replication.replication_healthy:
    - name: replica
    - max_lag_seconds: {{ db.settings.max_lag_seconds }}
    - require:
      - mariadb_replication: db-replication-replica
{%- endif %}
