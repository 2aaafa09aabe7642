# Source it: `demo_clients DIR` puts the development EHR (ehr-demo) and SMART app (demo-app) from
# config/clients into DIR, with the EHR's secret file made absolute (the copy no longer sits next
# to certs/), so a benchmark or fault run can add clients of its own beside them.
demo_clients() {
  mkdir -p "$1"
  sed "s|^client_secret_file = .*|client_secret_file = \"$PWD/certs/test/ehr-demo.secret\"|" \
    config/clients/ehr-demo.toml > "$1/ehr-demo.toml"
  cp config/clients/demo-app.toml "$1/"
}
