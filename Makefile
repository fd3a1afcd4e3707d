# Everyday commands; `scripts/test` is the one test command CI runs.
.PHONY: serve simulate test fmt lint bench sdk browser screenshots

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

browser:
	scripts/browser-tests

screenshots:
	scripts/screenshots

bench:
	cargo build --release
	target/release/litejobs bench --backend both
