# The README's commands, as make targets (make is not on a fresh Debian 12;
# the scripts are the source of truth).
.PHONY: all demo demo-stop test test-fast asan lint bench clean

all:
	$(MAKE) -C native

demo:
	bash scripts/demo.sh

demo-stop:
	bash scripts/demo.sh stop

test:
	bash scripts/test.sh

test-fast:
	bash scripts/test.sh --fast

asan:
	scripts/test-asan.sh

lint:
	ruff check .
	mypy pam_jctotp

bench:
	python3 bench/pam_login.py
	python3 bench/verify_rate.py
	python3 bench/compare_ga.py

clean:
	$(MAKE) -C native clean
