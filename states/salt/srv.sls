{#- salt role, /srv in git: the states and the pillar live in bare repositories on the master that operators push
    to; a hook refuses a pillar push whose inventory does not validate, and a push to main becomes the tree the
    master serves (docs/roles/salt.md, "/srv in git"). #}
{%- from 'rolestack.jinja' import rs, require_role with context %}
{%- import 'salt/files/srv.jinja' as texts %}
{{- require_role('salt', "salt.srv applies only to the host with role salt in the inventory (the master), not to "
                 ~ grains['id']) }}
{%- set group = 'rolestack-config' %}
{%- set deploy = '/usr/local/sbin/rolestack-srv-deploy' %}
{#- the hook validates with the python that runs salt (rolestack is installed there or synced beside it) and, on
    a master bootstrapped from a clone, the served checkout of the project (rolestack_project in the minion's
    configuration, written by the bootstrap) #}
{%- set python = grains['pythonexecutable'] %}
{%- set pythonpath = salt['config.get']('rolestack_project', '/srv/salt/current') %}
{%- set repos = [
      {'name': 'states', 'served': '/srv/salt', 'mode': '2775', 'hooks': ['post-receive'],
       'what': 'The salt states the master serves (file_roots): `current` is the tip of main of '
               '/srv/git/states.git, unpacked under `releases/<commit>`.'},
      {'name': 'pillar', 'served': '/srv/pillar', 'mode': '2770', 'hooks': ['pre-receive', 'post-receive'],
       'what': 'The pillar tree the master serves (pillar_roots): `current` is the tip of main of '
               '/srv/git/pillar.git, unpacked under `releases/<commit>`. The rolestack ext_pillar reads '
               'inventory.yaml from the repository itself. Holds secrets: group rolestack-config only.'},
    ] %}

salt-srv-git:
  pkg.installed:
    - name: git

salt-srv-group:
  group.present:
    - name: {{ group }}
    - system: True

salt-srv-deploy:
  file.managed:
    - name: {{ deploy }}
    - source: salt://salt/files/rolestack-srv-deploy.sh
    - mode: '0755'

{%- for dir, what, instead in [
      ('/srv', 'What the salt master serves and the git repositories it comes from.',
       'push to the repositories under /srv/git.'),
      ('/srv/git', 'Bare git repositories operators push to (branch main is served): `states.git` (the states, '
                   'a clone of rolestack) and `pillar.git` (inventory.yaml and pillar SLS). A push whose inventory '
                   'does not validate is refused by pillar.git\'s pre-receive hook.',
       'clone and push (`git push salt:/srv/git/pillar.git main`).'),
    ] %}

salt-srv-dir-{{ dir }}:
  file.directory:
    - name: {{ dir }}
    - mode: '0755'

salt-srv-readme-{{ dir }}:
  file.managed:
    - name: {{ dir }}/README.md
    - contents: {{ texts.readme(dir, what, instead) | json }}
    - mode: '0644'
    - require:
      - file: salt-srv-dir-{{ dir }}
{%- endfor %}
{%- for repo in repos %}
{%- set git_dir = '/srv/git/' ~ repo.name ~ '.git' %}
{#- what the repository and its served tree are now, read while rendering rather than by unless/onlyif checks
    (salt 3008 loads every state module for the first such check of a run: most of a no-op highstate's cost) #}
{%- set exists = salt['file.directory_exists'](git_dir) %}
{%- set grouped = exists and salt['file.get_group'](git_dir) == group %}
{%- set tip = salt['cmd.run_stdout']('git --git-dir=' ~ git_dir ~ ' rev-parse -q --verify refs/heads/main',
                                     python_shell=False, ignore_retcode=True, output_loglevel='quiet')
              if exists else '' %}
{%- set current = repo.served ~ '/current' %}
{%- set served = salt['file.readlink'](current) if salt['file.is_link'](current) else none %}
{%- set repo_state = 'test' if grouped else 'cmd' %}

{#- created empty unless the bootstrap seeded it (bootstrap/master.sh); operators push to it. Its files get the
    group when the repository does not have it yet #}
salt-srv-{{ repo.name }}-repo:
{%- if grouped %}
  test.nop: []
{%- else %}
  cmd.run:
    - name: >-
        { test -e {{ git_dir }}/HEAD || git init -q --bare --shared=0660 -b main {{ git_dir }}; }
        && chgrp -R {{ group }} {{ git_dir }}
    - require:
      - pkg: salt-srv-git
      - group: salt-srv-group
      - file: salt-srv-dir-/srv/git
{%- endif %}
{%- for hook in repo.hooks %}

salt-srv-{{ repo.name }}-{{ hook }}:
  file.managed:
    - name: {{ git_dir }}/hooks/{{ hook }}
{%- if hook == 'pre-receive' %}
    - contents: {{ texts.pre_receive(git_dir, 'main', 'inventory.yaml', python, pythonpath) | json }}
{%- else %}
    - contents: {{ texts.post_receive(git_dir, 'main', repo.served, deploy) | json }}
{%- endif %}
    - mode: '0755'
    - require:
      - {{ repo_state }}: salt-srv-{{ repo.name }}-repo
{%- endfor %}

salt-srv-{{ repo.name }}-served:
  file.directory:
    - names:
      - {{ repo.served }}
      - {{ repo.served }}/releases
    - user: root
    - group: {{ group }}
    - mode: '{{ repo.mode }}'
    - require:
      - group: salt-srv-group

salt-srv-{{ repo.name }}-readme:
  file.managed:
    - name: {{ repo.served }}/README.md
    - contents: {{ texts.readme(repo.served, repo.what, 'push to ' ~ git_dir ~ ' (its post-receive hook runs '
                                ~ deploy ~ ').') | json }}
    - mode: '0644'
    - require:
      - file: salt-srv-{{ repo.name }}-served

{#- serves the tip when current is not it (after the bootstrap's seeding, or a push made while the hook was
    missing); a push normally deploys through the post-receive hook. A repository without main serves nothing #}
{%- if tip and served != 'releases/' ~ tip %}
salt-srv-{{ repo.name }}-current:
  cmd.run:
    - name: {{ deploy }} {{ git_dir }} {{ repo.served }} main
    - require:
      - file: salt-srv-deploy
      - file: salt-srv-{{ repo.name }}-served
      - {{ repo_state }}: salt-srv-{{ repo.name }}-repo
{%- endif %}
{%- endfor %}
