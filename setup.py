"""The packages the wheel carries; everything else about the project is in pyproject.toml.

The Alembic migrations live at the top of the repository (`migrations/`, next to `bot/`), where the
`alembic` command and the source checkout find them. The wheel ships them inside the `bot` package, as
`bot/migrations/`, so an installed bot can migrate without the checkout: bot/store/database.py looks there
first. pyproject.toml cannot add a folder mapped from elsewhere to the packages it finds, hence this file.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(
            include=["bot", "bot.*", "inference", "inference.*"], exclude=["*.__pycache__"]
        ),
        "bot.migrations",
        "bot.migrations.versions",
    ],
    package_dir={"bot.migrations": "migrations"},
    package_data={"bot.migrations": ["script.py.mako"]},
)
