{#- redis role (docs/roles/sessions.md): an object-cache redis of one cluster (requirepass, protected mode, no
    persistence), bound to the private address and 127.0.0.1, behind the host firewall. Mapped in top.sls by
    I@rolestack:host:roles:redis. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('redis', "no rolestack:redis pillar for " ~ grains['id'] ~ ": the redis role applies only to "
                 ~ "hosts with role redis") }}

include:
  - firewall

redis-package:
  pkg.installed:
    - name: redis-server

{#- holds the password: owned by redis, never shown in a diff #}
redis-config:
  file.managed:
    - name: /etc/redis/redis.conf
    - source: salt://redis/files/redis.conf.jinja
    - template: jinja
    - user: redis
    - group: redis
    - mode: '0640'
    - show_changes: False
    - context:
        role: redis
    - require:
      - pkg: redis-package

redis-service:
  rolestack_service.running:
    - name: redis-server
    - enable: True
    - watch:
      - file: redis-config
