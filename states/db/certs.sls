{#- db role, certificates: the CA certificate, a server and a client certificate signed by the salt host (the CA,
    x509_v2 remote signing), renewed automatically. Included by the db role; the MariaDB configuration that
    uses these files is the db role's (docs/roles/db.md, "Certificates"). #}
{%- set rs = salt['pillar.get']('rolestack', {}) %}
{%- if not rs.get('platform') %}
{{ raise("no rolestack pillar for " ~ grains['id'] ~ ": is the rolestack ext_pillar configured on the master?") }}
{%- endif %}
{%- if not rs.get('db') %}
{{ raise("no rolestack:db pillar for " ~ grains['id'] ~ ": db.certs applies only to hosts with role db in the "
         ~ "inventory (the CA signs db certificates for them only)") }}
{%- endif %}
{%- set host = rs.host %}
{%- set zone = rs.platform.zone %}
{%- set ca = (rs.get('hosts_entries') or {}).get('salt') or {} %}
{%- set ssl_dir = '/etc/mysql/ssl' %}
{%- set ca_crt_on_ca = '/etc/pki/rolestack/ca.crt' %}
{#- renew when fewer days are left (the policies issue for 90 days). A one-off forced renewal:
    state.apply db.certs with the pillar rolestack_certs:days_remaining set to 400 (see docs/roles/db.md) #}
{%- set days_remaining = salt['pillar.get']('rolestack_certs:days_remaining', 30) | int %}

{#- the CA: the salt host's minion, found by its inventory name or FQDN (whichever is its minion id) in the mine,
    where salt.ca publishes its certificate #}
{%- set found = namespace(id=None, pem=None) %}
{%- if ca.get('name') %}
{%- set mine = salt['mine.get']([ca.name, ca.fqdn] | join(','), 'x509.get_pem_entries', tgt_type='list') %}
{%- for minion, entries in mine | dictsort if found.id is none and entries is mapping and entries.get(ca_crt_on_ca) %}
{%- set found.id = minion %}
{%- set found.pem = entries[ca_crt_on_ca] %}
{%- endfor %}
{%- endif %}
{%- if found.id is none %}
{{ raise("the CA certificate is not in the salt mine (x509.get_pem_entries of " ~ ca_crt_on_ca ~ " from the salt "
         ~ "host " ~ (ca.get('name') or '<none in the inventory>') ~ "): apply the salt role on the salt host first, "
         ~ "salt -C 'I@rolestack:host:roles:salt' state.apply salt, then apply this host again") }}
{%- endif %}

{#- names replicas and clients use: the host's name in the zone, its short name and its address; the masterdb
    host also answers as masterdb (the replicas' MASTER_HOST may be that alias) #}
{%- set names = [host.fqdn, host.name] %}
{%- if rs.db.get('is_master') %}
{%- do names.extend(['masterdb.' ~ zone, 'masterdb']) %}
{%- endif %}
{%- set san = [] %}
{%- for name in names | unique %}
{%- do san.append('DNS:' ~ name) %}
{%- endfor %}
{%- if host.get('address') %}
{%- do san.append('IP:' ~ host.address) %}
{%- endif %}

{#- the files are read by mysqld (user mysql) after it drops root: group mysql, keys not world-readable. The group
    may be created here, before the MariaDB package (its postinst reuses an existing group) #}
db-certs-group:
  group.present:
    - name: mysql
    - system: True

db-certs-dir:
  file.directory:
    - name: {{ ssl_dir }}
    - user: root
    - group: mysql
    - mode: '0750'
    - makedirs: True
    - require:
      - group: db-certs-group

db-certs-ca:
  x509.pem_managed:
    - name: {{ ssl_dir }}/ca.pem
    - text: {{ found.pem | json }}
    - user: root
    - group: mysql
    - mode: '0644'
    - require:
      - file: db-certs-dir

{%- for kind, policy, eku in (('server', 'rolestack_db_server', 'serverAuth'),
                                ('client', 'rolestack_db_client', 'clientAuth')) %}

{#- generated here, never leaves the host; kept across renewals #}
db-certs-{{ kind }}-key:
  x509.private_key_managed:
    - name: {{ ssl_dir }}/{{ kind }}.key
    - algo: rsa
    - keysize: 2048
    - user: root
    - group: mysql
    - mode: '0640'
    - require:
      - file: db-certs-dir

{#- signed by the CA under the {{ policy }} policy (it sets validity, key usages and extendedKeyUsage {{ eku }});
    re-requested when fewer than days_remaining days are left, or when the names, key or CA changed #}
db-certs-{{ kind }}-cert:
  x509.certificate_managed:
    - name: {{ ssl_dir }}/{{ kind }}.pem
    - ca_server: {{ found.id }}
    - signing_policy: {{ policy }}
    - private_key: {{ ssl_dir }}/{{ kind }}.key
    - CN: {{ host.fqdn }}
    - subjectAltName: {{ san | json }}
    - days_remaining: {{ days_remaining }}
    - user: root
    - group: mysql
    - mode: '0644'
    - require:
      - x509: db-certs-{{ kind }}-key
      - x509: db-certs-ca
{%- endfor %}

{#- a running server picks up new files without a restart (FLUSH SSL, MariaDB >= 10.4; LOCAL keeps it out of the
    binary log, where a replica would get an errant GTID and stop); a stopped one reads
    them when it starts. Replicas read their client certificate at each (re)connection. #}
db-certs-reload-mariadb:
  cmd.run:
    - name: mariadb --batch -e 'FLUSH LOCAL SSL'
    - onlyif: mariadb-admin --silent ping
    - onchanges:
      - x509: db-certs-ca
      - x509: db-certs-server-key
      - x509: db-certs-server-cert

{#- renewal does not wait for a highstate: the minion applies this SLS once a day #}
db-certs-renewal:
  schedule.present:
    - name: rolestack-db-certs
    - function: state.apply
    - job_args:
      - db.certs
    - hours: 24
    - splay: 3600
