# Roles map to SLS through the pillar the rolestack ext_pillar derives from the inventory,
# never through minion-id globs.
base:
  '*':
    - base
  'I@rolestack:host:roles:salt':
    - match: compound
    - salt
  'I@rolestack:host:roles:db':
    - match: compound
    - db
  'I@rolestack:host:roles:sessions':
    - match: compound
    - sessions
  'I@rolestack:host:roles:memcache':
    - match: compound
    - memcache
  'I@rolestack:host:roles:redis':
    - match: compound
    - redis
  'I@rolestack:host:roles:app or I@rolestack:host:roles:frontend or I@rolestack:host:roles:jobrunner':
    - match: compound
    - proxy
  'I@rolestack:host:roles:backup':
    - match: compound
    - backup
  'not I@rolestack:host:roles:backup':
    - match: compound
    - backup.source
