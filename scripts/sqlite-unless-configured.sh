# Sourced by the demo's and the Conduit example's hatch scripts (hatch.toml): the embedded SQLite
# database unless DB_TYPE or a URL (DB_URL, DATABASE_URL) says otherwise. A hatch env-var cannot
# say "unless": a DB_TYPE=sqlite set beside a user's DB_URL would contradict it.
if [ -z "${DB_TYPE+set}" ] && [ -z "${DB_URL:-}${DATABASE_URL:-}" ]; then
    export DB_TYPE=sqlite
fi
