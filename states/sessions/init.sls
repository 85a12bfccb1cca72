{#- sessions role (docs/roles/sessions.md): the sessions store, redis (requirepass, protected mode, RDB snapshots)
    and memcached, each bound to the private address and 127.0.0.1, behind the host firewall. Mapped in top.sls
    by I@rolestack:host:roles:sessions. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('sessions', "no rolestack:sessions pillar for " ~ grains['id'] ~ ": the sessions role applies only "
                 ~ "to hosts with role sessions") }}

include:
  - firewall

sessions-packages:
  pkg.installed:
    - pkgs:
      - redis-server
      - memcached

{#- holds the password: owned by redis, never shown in a diff #}
sessions-redis-config:
  file.managed:
    - name: /etc/redis/redis.conf
    - source: salt://redis/files/redis.conf.jinja
    - template: jinja
    - user: redis
    - group: redis
    - mode: '0640'
    - show_changes: False
    - context:
        role: sessions
    - require:
      - pkg: sessions-packages

sessions-redis-service:
  rolestack_service.running:
    - name: redis-server
    - enable: True
    - watch:
      - file: sessions-redis-config

sessions-memcached-config:
  file.managed:
    - name: /etc/memcached.conf
    - source: salt://memcache/files/memcached.conf.jinja
    - template: jinja
    - mode: '0644'
    - context:
        role: sessions
    - require:
      - pkg: sessions-packages

sessions-memcached-service:
  rolestack_service.running:
    - name: memcached
    - enable: True
    - watch:
      - file: sessions-memcached-config
