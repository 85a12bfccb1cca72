{#- base role: applied to every host of the platform. #}
{%- from 'rolestack.jinja' import rs with context %}

{#- ssh (operators, sshd; docs/roles/salt.md "Jump box") on every host; the host firewall on every host it guards
    a port of (rolestack:firewall: sshd on every host but the salt host, the key-value ports) #}
include:
  - ssh
{%- if rs.get('firewall') %}
  - firewall
{%- endif %}

{#- the files' texts are derived by the ext_pillar (_utils/rolestack_base.py): no template for the minion to fetch
    and render. Never leave a host without a resolver: no resolv_conf until the DNS server's address is known #}
{%- if rs.dns.resolv_conf %}
base-resolv-conf:
  file.managed:
    - name: /etc/resolv.conf
    - follow_symlinks: False
    - mode: '0644'
    - contents: {{ rs.dns.resolv_conf | json }}
{%- endif %}

base-hosts-entries:
  file.blockreplace:
    - name: /etc/hosts
    - marker_start: '# BEGIN rolestack core hosts (managed by salt, do not edit)'
    - marker_end: '# END rolestack core hosts'
    - append_if_not_found: True
    - content: |
{%- for line in rs.etc_hosts %}
        {{ line | join(' ') }}
{%- endfor %}

{#- the jump box prints the ssh configuration after login (motd), not before it (issue.net) #}
{%- for banner, text in (('/etc/issue.net', rs.banner.issue_net), ('/etc/motd', rs.banner.motd)) %}
base-banner-{{ banner }}:
  file.managed:
    - name: {{ banner }}
    - mode: '0644'
    - contents: {{ text | json }}
{%- endfor %}

{#- salt syncs 22 extension types on every highstate, loading the minion key once per type (~0.8 s); rolestack
    ships modules, states and utils: sync those first (with a reload, so this run uses them), and no others; and only
    when this minion's copies differ from what the master serves (the ext_pillar's extensions_digest): each sync asks
    the master for every file's hash, ~0.45 s of a no-op run. No digest (a master serving through another
    fileserver backend), or none here yet: sync #}
{%- set served = rs.get('extensions_digest') %}
{%- set synced = salt['rolestack_extmods.local_digest']() if served and 'rolestack_extmods.local_digest' in salt
                 else none %}
{%- for kind in ('utils', 'modules', 'states') if not served or synced != served %}
base-sync-{{ kind }}:
  saltutil.sync_{{ kind }}:
    - refresh: False
    - reload_modules: True
    - order: 1
{%- endfor %}

base-minion-config:
  file.serialize:
    - name: /etc/salt/minion.d/rolestack.conf
    - serializer: yaml
    - makedirs: True
    - mode: '0644'
    - dataset:
        mine_functions: {{ rs.mine_functions | json }}
        autoload_dynamic_modules: False

{#- report our addresses at once (a host missing from the inventory's addresses is found this way): the
    running minion read its configuration before the file above existed (it applies at the next start) #}
{%- for function, arguments in rs.mine_functions | dictsort %}
base-mine-send-{{ function }}:
  module.run:
    - mine.send:
      - name: {{ function }}
{%- for argument in arguments %}
{%- for key, value in argument | dictsort %}
      - {{ key }}: {{ value | json }}
{%- endfor %}
{%- endfor %}
    - onchanges:
      - file: base-minion-config
{%- endfor %}
