{#- db role (docs/roles/db.md): certificates, the MariaDB server, replication from masterdb, application databases. #}
include:
  - db.certs
  - db.server
  - db.replication
  - db.databases
