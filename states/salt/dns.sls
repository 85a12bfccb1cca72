{#- salt role, DNS: the salt master serves the platform's internal zone with gdnsd (docs/roles/salt.md). The
    files gdnsd reads come whole from the pillar (rolestack:dns_zone: config, text, reverse.text), derived from the
    inventory by _utils/rolestack_dns.py. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('salt', "no rolestack:dns_zone pillar for " ~ grains['id'] ~ ": the salt role (the DNS server "
                 ~ "of the zone) only applies to a host with role salt in the inventory") }}
{%- set host = rs.host or {} %}
{%- set zone = rs.dns_zone.zone %}
{%- set reverse = rs.dns_zone.reverse %}
{%- set conf_dir = '/etc/gdnsd' %}
{%- set checker = '/usr/local/sbin/rolestack-gdnsd-check' %}

{%- if not host.get('address') %}
{#- the zone's NS needs this host's address: it is known once the host reported it (base role, mine) #}
salt-dns-pending:
  test.show_notification:
    - text: >-
        DNS for {{ zone }} is not served yet: the address of {{ grains['id'] }} is pending (not in the
        inventory and not yet reported to the mine); the next highstate after it is known sets up gdnsd.
{%- else %}

salt-dns-pkg:
  pkg.installed:
    - name: gdnsd

salt-dns-checker:
  file.managed:
    - name: {{ checker }}
    - source: salt://salt/files/rolestack-gdnsd-check.sh
    - mode: '0755'

{#- check_cmd: the candidate file is checked by gdnsd checkconf before it replaces the live one #}
salt-dns-config:
  file.managed:
    - name: {{ conf_dir }}/config
    - contents: {{ rs.dns_zone.config | json }}
    - mode: '0644'
    - check_cmd: {{ checker }} -c {{ conf_dir }} config
    - require:
      - pkg: salt-dns-pkg
      - file: salt-dns-checker

salt-dns-zone:
  file.managed:
    - name: {{ conf_dir }}/zones/{{ zone }}
    - contents: {{ rs.dns_zone.text | json }}
    - mode: '0644'
    - check_cmd: {{ checker }} -c {{ conf_dir }} zones/{{ zone }}
    - require:
      - file: salt-dns-config

{#- the reverse zone of the inventory network: a PTR per host (derived beside the forward zone's records), its SOA
    mailbox in the forward zone; checked and served the same way #}
salt-dns-reverse-zone:
  file.managed:
    - name: {{ conf_dir }}/zones/{{ reverse.zone }}
    - contents: {{ reverse.text | json }}
    - mode: '0644'
    - check_cmd: {{ checker }} -c {{ conf_dir }} zones/{{ reverse.zone }}
    - require:
      - file: salt-dns-config

{#- only the zones above are served: a zone file left from an earlier name (level, domain, network) goes #}
salt-dns-zones-dir:
  file.directory:
    - name: {{ conf_dir }}/zones
    - clean: True
    - require:
      - file: salt-dns-zone
      - file: salt-dns-reverse-zone

{#- a config change is picked up by reload (systemd ExecReload: gdnsdctl replace, no downtime) #}
salt-dns-service:
  rolestack_service.running:
    - name: gdnsd
    - enable: True
    - reload: True
    - require:
      - file: salt-dns-zones-dir
    - watch:
      - file: salt-dns-config

salt-dns-reload-zones:
  cmd.run:
    - name: gdnsdctl -c {{ conf_dir }} reload-zones
    - onchanges:
      - file: salt-dns-zone
      - file: salt-dns-reverse-zone
      - file: salt-dns-zones-dir
    - require:
      - rolestack_service: salt-dns-service
{%- endif %}
