{#- The host firewall (docs/roles/sessions.md): the nftables table inet rolestack admits each guarded port (sshd on
    every host but the salt host, the key-value ports of sessions, memcache, redis) from loopback and
    rolestack:firewall's allow-list only. The ruleset is checked with nft -c -f before it replaces the file, loaded
    unless the live table already is the file's (its digest), and loaded again at boot by rolestack-firewall.service.
    Included by the base role (and by the key-value roles' SLS). #}
{%- from 'rolestack.jinja' import rs with context %}
{%- if not rs.get('firewall') %}
{{ raise("no rolestack:firewall pillar for " ~ grains['id'] ~ ": the firewall applies only to hosts with a port "
         ~ "to guard (every host but the salt host, once the salt host's address is known)") }}
{%- endif %}

firewall-pkg:
  pkg.installed:
    - name: nftables

{#- the text is derived by the ext_pillar (rolestack_kv.nft_ruleset of rolestack:firewall:services) #}
firewall-ruleset:
  file.managed:
    - name: /etc/rolestack/firewall.nft
    - contents: {{ rs.firewall.ruleset | json }}
    - makedirs: True
    - mode: '0600'
    - check_cmd: /usr/sbin/nft -c -f
    - require:
      - pkg: firewall-pkg

firewall-boot-unit:
  file.managed:
    - name: /etc/systemd/system/rolestack-firewall.service
    - source: salt://firewall/files/rolestack-firewall.service
    - mode: '0644'

firewall-boot:
  rolestack_service.enabled:
    - name: rolestack-firewall
    - require:
      - file: firewall-boot-unit
      - file: firewall-ruleset

{#- loaded when the live table is not the file's (a state of its own: an unless check costs ~0.75 s per run) #}
firewall-load:
  rolestack_kv.firewall_loaded:
    - name: /etc/rolestack/firewall.nft
    - require:
      - file: firewall-ruleset
