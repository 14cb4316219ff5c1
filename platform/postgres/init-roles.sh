#!/usr/bin/env bash
# The two database roles Affectloop connects as (platform/README.md, "Database roles"):
#   affectloop_owner  owns the database, the schema and every table; only `migrate` logs in as it.
#   affectloop_app    owns nothing; the running platform logs in as it. `manage.py grant_app_privileges`
#                     (run by `migrate`) gives it DML, and on the audit log only SELECT and INSERT: an
#                     owner could alter or truncate the log whatever the triggers say.
#
# The postgres image runs this once, as its superuser, when it initialises an empty data directory
# (mounted into /docker-entrypoint-initdb.d). It is idempotent and also moves objects another role
# created in schema public to the owner, so the same script upgrades a database that a single
# superuser role used to own: run it by hand as that role (PGUSER=...). Passwords are read from the
# secret files by psql itself, so they never appear on a command line or in the environment.
#
# The subshell keeps `set -u` and `exit` out of the image's entrypoint when it sources a script that
# is not executable.
(
set -Eeuo pipefail

db="${AFFECTLOOP_DB_NAME:-affectloop}"
owner="${AFFECTLOOP_DB_OWNER_ROLE:-affectloop_owner}"
app="${AFFECTLOOP_DB_APP_ROLE:-affectloop_app}"
owner_password_file="${AFFECTLOOP_DB_OWNER_PASSWORD_FILE:-/run/secrets/postgres_owner_password}"
app_password_file="${AFFECTLOOP_DB_APP_PASSWORD_FILE:-/run/secrets/postgres_app_password}"

for file in "$owner_password_file" "$app_password_file"; do
    if [ ! -s "$file" ]; then
        echo "init-roles: $file is missing or empty (see platform/README.md, First start)" >&2
        exit 1
    fi
done

psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet \
     --username "${PGUSER:-${POSTGRES_USER:-postgres}}" --dbname postgres \
     -v db="$db" -v owner="$owner" -v app="$app" \
     -v owner_password_file="$owner_password_file" -v app_password_file="$app_password_file" <<'SQL'
\set owner_password `cat :'owner_password_file'`
\set app_password `cat :'app_password_file'`

SELECT format('CREATE ROLE %I', r) FROM unnest(ARRAY[:'owner', :'app']) AS r
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) \gexec
-- Neither may create roles or databases or bypass row security; NOINHERIT: neither gains the rights
-- of a role someone later grants it.
ALTER ROLE :"owner" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
      PASSWORD :'owner_password';
ALTER ROLE :"app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT
      PASSWORD :'app_password';
\unset owner_password
\unset app_password

SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
ALTER DATABASE :"db" OWNER TO :"owner";
-- PUBLIC may connect and create temporary tables by default: only the two roles (and superusers) here.
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"db" TO :"app";

\connect :"db"
ALTER SCHEMA public OWNER TO :"owner";
-- Before PostgreSQL 15 every role may create tables in public; a table the app created would be its own.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"app";

-- Upgrades: what an earlier role created in public becomes the owner's. Sequences behind serial and
-- identity columns follow their table; objects of extensions stay with the extension.
SELECT format('ALTER %s %s OWNER TO %I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW'
                             WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
              c.oid::regclass, :'owner')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
   AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = :'owner')
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                                             AND d.deptype IN ('a', 'i', 'e')) \gexec
SELECT format('ALTER %s %s OWNER TO %I', CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
              p.oid::regprocedure, :'owner')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public' AND p.prokind IN ('f', 'p')
   AND p.proowner <> (SELECT oid FROM pg_roles WHERE rolname = :'owner')
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                                             AND d.deptype = 'e') \gexec
SQL

echo "init-roles: database $db owned by $owner; $app may connect and owns nothing"
)
