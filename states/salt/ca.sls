{#- salt role, CA: the salt host is the platform's certificate authority (x509_v2). Its private key never
    leaves this host; db hosts get certificates by remote signing (docs/roles/db.md, "Certificates").
    The signing policies are pillar (x509_signing_policies, from the rolestack ext_pillar): x509_v2 reads them
    at each request, so a change needs no minion restart. #}
{%- set rs = salt['pillar.get']('rolestack', {}) %}
{%- if not rs.get('platform') %}
{{ raise("no rolestack pillar for " ~ grains['id'] ~ ": is the rolestack ext_pillar configured on the master?") }}
{%- endif %}
{%- set host = rs.host or {} %}
{%- if 'salt' not in host.get('roles', []) %}
{{ raise("salt.ca applies only to the host with role salt in the inventory (the CA), not to " ~ grains['id']) }}
{%- endif %}
{%- set platform = rs.platform %}
{%- set pki_dir = '/etc/pki/rolestack' %}
{%- set ca_key = pki_dir ~ '/ca.key' %}
{%- set ca_crt = pki_dir ~ '/ca.crt' %}
{%- set issued_dir = pki_dir ~ '/issued' %}

{#- the policies (pillar x509_signing_policies, given to the salt host by the rolestack ext_pillar) must sign with
    this CA and name the hosts they serve: refuse a pillar that names other files #}
{%- set policies = salt['pillar.get']('x509_signing_policies', {}) %}
{%- set missing = [] %}
{%- for policy_name in ('rolestack_db_server', 'rolestack_db_client') %}
{%- set items = policies.get(policy_name) %}
{%- if not items %}
{%- do missing.append(policy_name) %}
{%- else %}
{%- set policy = {} %}
{%- for item in (items if items is sequence and items is not string and items is not mapping else [items]) %}
{%- do policy.update(item) %}
{%- endfor %}
{%- if policy.get('signing_private_key') != ca_key or policy.get('signing_cert') != ca_crt
      or not policy.get('minions') %}
{{ raise("x509_signing_policies:" ~ policy_name ~ " in the pillar of " ~ grains['id'] ~ " is incomplete: "
         ~ "expected minions, signing_private_key: " ~ ca_key ~ " and signing_cert: " ~ ca_crt) }}
{%- endif %}
{%- endif %}
{%- endfor %}

{%- if missing %}
{#- the CA is set up all the same; it refuses every request until the pillar has the policies #}
salt-ca-policies-pending:
  test.show_notification:
    - text: >-
        x509_signing_policies {{ missing | join(', ') }} not in the pillar of {{ grains['id'] }}: the CA refuses
        db hosts' certificate requests until the rolestack ext_pillar gives them
{%- endif %}

salt-ca-dir:
  file.directory:
    - name: {{ pki_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - makedirs: True

{#- a copy of every certificate the CA issues (policies' copypath): <serial>.crt #}
salt-ca-issued-dir:
  file.directory:
    - name: {{ issued_dir }}
    - user: root
    - group: root
    - mode: '0700'
    - require:
      - file: salt-ca-dir

{#- created once, never replaced (new: False): every certificate the platform trusts depends on it #}
salt-ca-key:
  x509.private_key_managed:
    - name: {{ ca_key }}
    - algo: rsa
    - keysize: 4096
    - user: root
    - group: root
    - mode: '0600'
    - require:
      - file: salt-ca-dir

{#- self-signed; re-issued (same key, same subject) a year before it expires, so issued certificates keep
    verifying against either version #}
salt-ca-cert:
  x509.certificate_managed:
    - name: {{ ca_crt }}
    - signing_private_key: {{ ca_key }}
    - CN: {{ platform.zone }} CA
    - O: {{ platform.name }}
    - basicConstraints: 'critical, CA:true, pathlen:0'
    - keyUsage: 'critical, cRLSign, keyCertSign'
    - subjectKeyIdentifier: hash
    - authorityKeyIdentifier: 'keyid:always'
    - days_valid: 3650
    - days_remaining: 365
    - user: root
    - group: root
    - mode: '0644'
    - require:
      - x509: salt-ca-key

{#- publish the CA certificate to the mine (db hosts install it from there): at once when it changed, or when
    the mine does not hold what is on disk (first run, a lost master cache) #}
{#- (x509.get_pem_entries returns bytes, the mine gives them back as str: compare bytes) #}
{%- set on_disk = salt['x509.get_pem_entries'](ca_crt).get(ca_crt) if salt['file.file_exists'](ca_crt) else none %}
{%- set published = (salt['mine.get'](grains['id'], 'x509.get_pem_entries').get(grains['id']) or {}).get(ca_crt) %}
salt-ca-mine-send:
  module.run:
    - mine.send:
      - name: x509.get_pem_entries
      - glob_path: {{ ca_crt }}
    - require:
      - x509: salt-ca-cert
{%- if on_disk and published and published | to_bytes == on_disk | to_bytes %}
    - onchanges:
      - x509: salt-ca-cert
{%- endif %}
