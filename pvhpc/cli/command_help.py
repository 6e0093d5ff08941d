"""Man-page style help for every command: a description, examples, the environment and the exit status."""

from __future__ import annotations

import argparse
import textwrap

from pvhpc.cli import exit_codes

CLIENT_ENVIRONMENT = """\
environment:
  PVHPC_URL            the pvhpc service, e.g. https://viz.example.org (or --url)
  PVHPC_TOKEN          a personal API token ('pvhpc token create NAME' makes one)
  PVHPC_LOGIN_HOST     the login host for 'pvhpc url' tunnels (or --login)
  PVHPC_CLIENT_CONFIG  a YAML file with url:, token:, login_host: (default ~/.config/pvhpc/client.yaml);
                       the environment wins over the file"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's examples as written; wraps the description's paragraphs."""

    def _fill_text(self, text, width, indent):
        paragraphs = text.split("\n\n")
        return "\n\n".join(
            p if p.startswith(" ") or "\n  " in p else textwrap.fill(" ".join(p.split()), width,
                                                                      initial_indent=indent,
                                                                      subsequent_indent=indent)
            for p in paragraphs
        )


def add_command(sub, name: str, summary: str, description: str, examples: list[tuple[str, str]],
                environment: str | None = CLIENT_ENVIRONMENT, exit_notes: str = "", parents=()) -> argparse.ArgumentParser:
    lines = ["examples:"]
    for command, meaning in examples:
        lines.append(f"  {command}")
        if meaning:
            lines.append(f"      {meaning}")
    sections = ["\n".join(lines)]
    if environment:
        sections.append(environment)
    status = exit_codes.epilog()
    if exit_notes:
        status += "\n" + textwrap.indent(exit_notes.strip("\n"), "  ")
    sections.append(status)
    sections.append("See docs/cli.md for every command, its --json fields and these exit codes.")
    return sub.add_parser(name, help=summary, description=description, epilog="\n\n".join(sections),
                          formatter_class=HelpFormatter, parents=list(parents))
