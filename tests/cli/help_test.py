#!/usr/bin/env python3
"""Every subcommand's --help against README.md: each option shows its default (or where its default
comes from), and the README's synopsis of each subcommand names exactly the flags --help lists — no
flag missing from the docs, none documented that does not exist.

usage: help_test.py SHOAL_BINARY SOURCE_DIR
"""
import re
import subprocess
import sys

SHOAL, SRC = sys.argv[1], sys.argv[2]
COMMANDS = ["up", "serve", "worker", "generate", "plan", "bench serve", "bench a2a", "bench balance"]
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def help_options(command):
    """(flag, has_value, shows_default) for every option of `shoal COMMAND --help`."""
    out = subprocess.run([SHOAL] + command.split() + ["--help"], capture_output=True, text=True, check=True).stdout
    opts = []
    for line in out.splitlines():
        m = re.match(r"^\s+(?:-\w,)?(--[\w-]+)(?:,--[\w-]+)*(?:\s+(\S.*?))?(?:\s{2,}.*)?$", line)  # aliases: the first name
        if not m or m.group(1) == "--help":
            continue
        spec = m.group(2) or ""
        has_value = bool(re.match(r"(TEXT|INT|UINT|FLOAT)", spec))
        opts.append((m.group(1), has_value, "=" in spec or not has_value))
    return opts


def readme_synopsis(command):
    """The flags named in README.md's synopsis lines for `shoal COMMAND` (code blocks only)."""
    blocks, current = [], None
    for line in open(SRC + "/README.md").read().splitlines():
        if line.startswith("```"):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    flags = set()
    for lines in blocks:
        for i, line in enumerate(lines):
            if not re.match(r"^(mpirun -np N )?shoal %s( |$)" % re.escape(command), line):
                continue
            span = [line]
            for nxt in lines[i + 1:]:
                if not nxt.startswith(" "):
                    break
                span.append(nxt)
            for s in span:
                flags.update(re.findall(r"(--[a-z][\w-]*)", s.split("#")[0]))
    return flags


def main():
    for command in COMMANDS:
        opts = help_options(command)
        check(len(opts) > 0, "shoal %s --help lists options" % command)
        for flag, has_value, shows_default in opts:
            check(shows_default, "shoal %s --help shows %s's default" % (command, flag))
        listed = {f for f, _, _ in opts}
        documented = readme_synopsis(command)
        check(sorted(listed - documented) == [], "README's `shoal %s` synopsis has every flag (missing: %s)"
              % (command, ", ".join(sorted(listed - documented))))
        check(sorted(documented - listed) == [], "README's `shoal %s` synopsis has no flag --help lacks (extra: %s)"
              % (command, ", ".join(sorted(documented - listed))))
    if FAILURES:
        print("%d check(s) failed" % len(FAILURES))
        sys.exit(1)
    print("all checks passed")


main()
