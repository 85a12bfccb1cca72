{#- memcache role (docs/roles/sessions.md): an object-cache memcached of one cluster, bound to the private address
    and 127.0.0.1 (no SASL: twemproxy speaks the text protocol), behind the host firewall. Mapped in top.sls by
    I@rolestack:host:roles:memcache. #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{{- require_role('memcache', "no rolestack:memcache pillar for " ~ grains['id'] ~ ": the memcache role applies "
                 ~ "only to hosts with role memcache") }}

include:
  - firewall

memcache-package:
  pkg.installed:
    - name: memcached

memcache-config:
  file.managed:
    - name: /etc/memcached.conf
    - source: salt://memcache/files/memcached.conf.jinja
    - template: jinja
    - mode: '0644'
    - context:
        role: memcache
    - require:
      - pkg: memcache-package

memcache-service:
  rolestack_service.running:
    - name: memcached
    - enable: True
    - watch:
      - file: memcache-config
