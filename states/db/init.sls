{#- db role (docs/roles/db.md): certificates, the MariaDB server, replication from masterdb. #}
include:
  - db.certs
  - db.server
  - db.replication
