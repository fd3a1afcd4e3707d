# Everyday commands; `scripts/test` is the one test command CI runs.
.PHONY: serve simulate test fmt lint bench sdk openapi fuzz browser screenshots

serve:
	cargo run --release -- serve

simulate:
	cargo run --release -- serve --simulate

test:
	scripts/test

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets --locked -- -D warnings

sdk:
	scripts/sdk-tests

# Rewrites docs/openapi.json from the code (review the diff), then checks it.
openapi:
	LITEJOBS_UPDATE_OPENAPI=1 cargo test --locked --test api openapi::

fuzz:
	scripts/api-fuzz --long

browser:
	scripts/browser-tests

screenshots:
	scripts/screenshots

bench:
	cargo build --release
	target/release/litejobs bench --backend both
