{#- proxy on web roles (app, frontend, jobrunner): a local twemproxy (nutcracker) exposing the sessions store and the
    object-cache clusters on 127.0.0.1 (docs/roles/sessions.md, "Proxy (twemproxy)"). The pools, their tuning and the
    service's options come from the twemproxy module and util (from rolestack:proxy); this file only orders them.
    nutcracker refuses a configuration without pools: with none (no sessions, memcache or redis host yet) it is
    stopped. #}
{%- from 'rolestack.jinja' import rs with context %}
{%- if rs.get('proxy') is none %}
{{ raise("no rolestack:proxy pillar for " ~ grains['id'] ~ ": the proxy applies only to hosts with role app, frontend or jobrunner") }}
{%- endif %}

proxy-package:
  pkg.installed:
    - name: nutcracker

{#- Debian's service runs `nutcracker $DAEMON_OPTS`: our config file, the stats port on 127.0.0.1 only #}
proxy-defaults:
  twemproxy.defaults_managed:
    - name: /etc/default/nutcracker
    - require:
      - pkg: proxy-package

{%- if rs.proxy.get('pools') %}

{#- validated with `nutcracker -t` before it replaces the live file; 0640 root:nutcracker (redis passwords) #}
proxy-config:
  twemproxy.config_managed:
    - name: /etc/nutcracker/nutcracker.yml
    - require:
      - pkg: proxy-package

{#- nutcracker has no reload: a changed config or option restarts it #}
proxy-service:
  rolestack_service.running:
    - name: nutcracker
    - enable: True
    - watch:
      - twemproxy: proxy-config
      - twemproxy: proxy-defaults
{%- else %}

proxy-service:
  rolestack_service.dead:
    - name: nutcracker
    - enable: False
    - require:
      - pkg: proxy-package
{%- endif %}
