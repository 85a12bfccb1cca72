{#- db role, certificates: the CA certificate, a server and a client certificate signed by the salt host (the CA,
    x509_v2 remote signing), renewed automatically. Included by the db role; the MariaDB configuration that
    uses these files is the db role's (docs/roles/db.md, "Certificates"). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('db', "no rolestack:db pillar for " ~ grains['id'] ~ ": db.certs applies only to hosts with role db "
                 ~ "in the inventory (the CA signs db certificates for them only)") }}
{%- set certs = rs.db.get('certs') %}
{%- if not certs %}
{{ raise("no certificate policies for " ~ grains['id'] ~ " in its rolestack:db pillar: the inventory has no address "
         ~ "for it yet (a pending host gets its policies once the mine reports its address)") }}
{%- endif %}
{%- set ca = (rs.get('hosts_entries') or {}).get('salt') or {} %}
{%- set ssl_dir = '/etc/mysql/ssl' %}
{%- set ca_crt_on_ca = '/etc/pki/rolestack/ca.crt' %}
{#- renew when fewer days are left (the policies issue for 90 days). A one-off forced renewal:
    state.apply db.certs with the pillar rolestack_certs:days_remaining set to 400 (see docs/roles/db.md) #}
{%- set days_remaining = salt['pillar.get']('rolestack_certs:days_remaining', 30) | int %}

{#- the CA: the salt host's minion, whose id is its inventory name (one minion id per host), in the mine where
    salt.ca publishes its certificate #}
{%- set ca_pem = none %}
{%- if ca.get('name') %}
{%- set entries = salt['mine.get'](ca.name, 'x509.get_pem_entries', tgt_type='list').get(ca.name) %}
{%- set ca_pem = entries.get(ca_crt_on_ca) if entries is mapping else none %}
{%- endif %}
{%- if not ca_pem %}
{{ raise("the CA certificate is not in the salt mine (x509.get_pem_entries of " ~ ca_crt_on_ca ~ " from the salt "
         ~ "host " ~ (ca.get('name') or '<none in the inventory>') ~ "): apply the salt role on the salt host first, "
         ~ "salt -C 'I@rolestack:host:roles:salt' state.apply salt, then apply this host again") }}
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
    - text: {{ ca_pem | json }}
    - user: root
    - group: mysql
    - mode: '0644'
    - require:
      - file: db-certs-dir

{%- for kind, policy in certs.policies | dictsort %}

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

{#- signed by the CA under this host's own policy, which fixes the names, validity and key usages (the request's
    CN and subjectAltName are the same ones, from the pillar); re-requested when fewer than days_remaining days are
    left, or when the names, key or CA changed #}
db-certs-{{ kind }}-cert:
  x509.certificate_managed:
    - name: {{ ssl_dir }}/{{ kind }}.pem
    - ca_server: {{ ca.name }}
    - signing_policy: {{ policy }}
    - private_key: {{ ssl_dir }}/{{ kind }}.key
    - CN: {{ certs.cn }}
    - subjectAltName: {{ certs.subject_alt_names | json }}
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
