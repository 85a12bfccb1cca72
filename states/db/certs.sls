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
{#- everything below comes from rolestack:db:certs (the inventory util derives it, docs/roles/db.md
    "Certificates"). Renew when fewer than days_remaining days are left (the policies issue for 90 days). A
    one-off forced renewal: state.apply db.certs with the pillar rolestack_certs:days_remaining set to 400 #}
{%- set days_remaining = salt['pillar.get']('rolestack_certs:days_remaining', certs.days_remaining) | int %}

{#- the CA: the salt host's minion, whose id is its inventory name (one minion id per host), in the mine where
    salt.ca publishes its certificate #}
{%- set ca_pem = none %}
{%- if certs.ca.minion %}
{%- set entries = salt['mine.get'](certs.ca.minion, 'x509.get_pem_entries', tgt_type='list').get(certs.ca.minion) %}
{%- set ca_pem = entries.get(certs.ca.mine_path) if entries is mapping else none %}
{%- endif %}
{%- if not ca_pem %}
{{ raise("the CA certificate is not in the salt mine (x509.get_pem_entries of " ~ certs.ca.mine_path ~ " from the "
         ~ "salt host " ~ (certs.ca.minion or '<none in the inventory>') ~ "): apply the salt role on the salt host "
         ~ "first, salt -C 'I@rolestack:host:roles:salt' state.apply salt, then apply this host again") }}
{%- endif %}

{#- the files are read by mysqld (user mysql) after it drops root: group mysql, keys not world-readable. The group
    may be created here, before the MariaDB package (its postinst reuses an existing group) #}
db-certs-group:
  group.present:
    - name: mysql
    - system: True

db-certs-dir:
  file.directory:
    - name: {{ certs.dir }}
    - user: root
    - group: mysql
    - mode: '0750'
    - makedirs: True
    - require:
      - group: db-certs-group

{#- the rolestack_x509 states are x509_v2's, decided on this host first (the same comparisons): a run with nothing
    to do neither asks the CA nor loads a key twice; when the check finds anything to do, x509_v2's state runs as
    it always did and decides (_states/rolestack_x509.py) #}
db-certs-ca:
  rolestack_x509.pem_managed:
    - name: {{ certs.ca.file | json }}
    - text: {{ ca_pem | json }}
    - user: root
    - group: mysql
    - mode: '0644'
    - require:
      - file: db-certs-dir

{%- for kind, spec in certs.kinds | dictsort %}

{#- generated here, never leaves the host; kept across renewals #}
db-certs-{{ kind }}-key:
  rolestack_x509.private_key_managed:
    - name: {{ spec.key | json }}
    - algo: rsa
    - keysize: 2048
    - user: root
    - group: mysql
    - mode: '0640'
    - require:
      - file: db-certs-dir

{#- signed by the CA under this host's own policy, which fixes the names, validity and key usages (the request's
    CN and subjectAltName are the same ones); re-requested when fewer than days_remaining days are left, or when
    the names, key or CA changed. The check compares with signing_policy_contents, the CA's policy as it would
    send it #}
db-certs-{{ kind }}-cert:
  rolestack_x509.certificate_managed:
    - name: {{ spec.cert | json }}
    - ca_server: {{ certs.ca.minion | json }}
    - signing_policy: {{ spec.policy | json }}
    - signing_policy_contents: {{ spec.policy_contents | json }}
    - private_key: {{ spec.key | json }}
    - CN: {{ certs.cn | json }}
    - subjectAltName: {{ certs.subject_alt_names | json }}
    - days_remaining: {{ days_remaining }}
    - user: root
    - group: mysql
    - mode: '0644'
    - require:
      - rolestack_x509: db-certs-{{ kind }}-key
      - rolestack_x509: db-certs-ca
{%- endfor %}

{#- a running server picks up new files without a restart (FLUSH SSL, MariaDB >= 10.4; LOCAL keeps it out of the
    binary log, where a replica would get an errant GTID and stop); a stopped one reads
    them when it starts. Replicas read their client certificate at each (re)connection. #}
db-certs-reload-mariadb:
  cmd.run:
    - name: mariadb --batch -e 'FLUSH LOCAL SSL'
    - onlyif: mariadb-admin --silent ping
    - onchanges:
      - rolestack_x509: db-certs-ca
      - rolestack_x509: db-certs-server-key
      - rolestack_x509: db-certs-server-cert

{#- renewal does not wait for a highstate: the minion applies this SLS once a day #}
db-certs-renewal:
  schedule.present:
    - name: rolestack-db-certs
    - function: state.apply
    - job_args:
      - db.certs
    - hours: 24
    - splay: 3600
