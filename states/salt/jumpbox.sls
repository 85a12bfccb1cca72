{#- salt role, jump box (docs/roles/salt.md, "Jump box"): the ssh_config operators copy (every inventory host by
    name, ProxyJump through this host; also printed in the motd by the base role) and the known_hosts of every host,
    built from the host keys they publish in the mine (ssh.host_keys): the first connection needs no trust on first
    use. The operators' accounts and sshd are the ssh SLS's (every host, included by base). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('salt', "salt.jumpbox applies only to the host with role salt in the inventory (the jump box), "
                 ~ "not to " ~ grains['id']) }}
{%- set box = rs.jumpbox %}

salt-jumpbox-ssh-config:
  file.managed:
    - name: {{ box.ssh_config_path }}
    - makedirs: True
    - mode: '0644'
    - contents: {{ box.ssh_config | json }}

{#- the ext_pillar builds it from the master's mine when the pillar is compiled: a host that publishes its keys
    later is added by the next highstate of this host #}
salt-jumpbox-known-hosts:
  file.managed:
    - name: {{ box.known_hosts_path }}
    - contents: {{ box.known_hosts | json }}
    - mode: '0644'
