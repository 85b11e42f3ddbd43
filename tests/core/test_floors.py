"""The floors hold: an app imports only apps on its own floor or below
(docs/architecture.md). A lower app that must tell a higher one something
offers a registry instead."""

import ast
from pathlib import Path

APPS = Path(__file__).resolve().parents[2] / "apps"
FLOOR = {
    "core": 0,
    "customers": 1,
    "segments": 2,
    "messaging": 3,
    "surveys": 4,
    "tracking": 4,
    "journeys": 5,
    "builder": 6,
    "analytics": 6,
}
# Apps sharing a floor may use each other's registries; these are the ones
# that do (surveys fills tracking's inbound SMS registry).
SIDEWAYS = {("surveys", "tracking")}


def imported_apps(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("apps.") and "." in name}


def upward_imports() -> list[str]:
    found = []
    for app, floor in FLOOR.items():
        for path in sorted((APPS / app).rglob("*.py")):
            for other in imported_apps(path) - {app}:
                if other not in FLOOR:
                    found.append(f"{path.relative_to(APPS)} imports unknown app {other}")
                elif FLOOR[other] > floor or (
                    FLOOR[other] == floor and (app, other) not in SIDEWAYS
                ):
                    found.append(f"{path.relative_to(APPS)} imports apps.{other}")
    return found


def test_every_app_is_on_a_floor():
    on_disk = {p.name for p in APPS.iterdir() if (p / "apps.py").exists()}
    assert on_disk == set(FLOOR)


def test_no_app_imports_an_app_above_it():
    assert upward_imports() == []
