from pathlib import Path

import pytest

from core.settings import SETTINGS, SettingsError, env_example, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_env_example_lists_every_setting_with_its_default():
    text = (ROOT / ".env.example").read_text()
    assert text == env_example()
    for s in SETTINGS:
        assert f"{s.env}={s.default}\n" in text


def test_defaults(tmp_path):
    s = load_settings({"STATUARY_DATA_DIR": str(tmp_path)}, dotenv_path=None)
    assert s.host == "127.0.0.1" and s.share is False and s.png_metadata is True
    assert s.database_url == f"sqlite:///{tmp_path / 'statuary.db'}"


def test_dotenv_file_is_read_and_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("STATUARY_PORT=9000\nSTATUARY_QUEUE_MAX=5\n")
    s = load_settings({"STATUARY_QUEUE_MAX": "7"}, dotenv_path=env_file)
    assert (s.port, s.queue_max) == (9000, 7)


@pytest.mark.parametrize("env, message", [
    ({"STATUARY_PORT": "http"}, "STATUARY_PORT='http' is not a whole number"),
    ({"STATUARY_QUEUE_MAX": "0"}, "use an integer from 1"),
    ({"STATUARY_DEVICE": "tpu"}, "not a device"),
    ({"STATUARY_DTYPE": "int8"}, "not a dtype"),
    ({"STATUARY_PNG_METADATA": "maybe"}, "not a switch"),
    ({"STATUARY_QUEUE_MAXX": "3"}, "Unknown setting(s) STATUARY_QUEUE_MAXX"),
    ({"STATUARY_AUTH": "nopassword"}, "user:password"),
    ({"STATUARY_BROKER_URL": "redis://127.0.0.1:6379/0"}, "the database is SQLite, which several machines cannot "
                                                          "share; set DATABASE_URL to a PostgreSQL URL"),
    ({"STATUARY_BROKER_URL": "redis://h/0", "DATABASE_URL": "sqlite:////tmp/x.db"}, "set DATABASE_URL"),
    ({"STATUARY_BROKER_URL": "amqp://h//", "DATABASE_URL": "postgresql+psycopg://u@h/d"}, "is not a Redis URL"),
    # A database URL is checked before anything connects (each of these was a traceback).
    ({"DATABASE_URL": "garbage"}, "DATABASE_URL='garbage' is not a database URL; use postgresql+psycopg://"),
    ({"DATABASE_URL": "mysql://u@h/d"}, "names a mysql database; Statuary keeps its record in PostgreSQL or SQLite"),
    ({"DATABASE_URL": "postgres://u:secret@h/d"}, "DATABASE_URL='postgres://u:***@h/d' starts with postgres://, which "
                                                  "SQLAlchemy does not accept; write postgresql+psycopg:// instead."),
    ({"DATABASE_URL": "postgresql+nosuchdriver://u@h/d"}, "asks for the driver nosuchdriver, which is not installed"),
    ({"DATABASE_URL": "sqlite://"}, "is an in-memory SQLite database"),
])
def test_bad_settings_are_clear_errors(env, message):
    with pytest.raises(SettingsError) as info:
        load_settings(env, dotenv_path=None)
    assert message in str(info.value)


def test_a_password_in_a_url_is_never_repeated_back():
    for env in ({"DATABASE_URL": "mysql://u:hunter2@h/d"}, {"DATABASE_URL": "post gres://u:hunter2@h/d"},
                {"DATABASE_URL": "mysql://u:hun/ter2@h/d"},
                {"STATUARY_BROKER_URL": "amqp://u:hunter2@h//", "DATABASE_URL": "postgresql+psycopg://u@h/d"}):
        with pytest.raises(SettingsError) as info:
            load_settings(env, dotenv_path=None)
        assert "hunter2" not in str(info.value) and "ter2" not in str(info.value), str(info.value)
        assert "u:***@h" in str(info.value), str(info.value)


def test_a_broker_with_postgresql_is_accepted_and_no_broker_is_the_default():
    assert load_settings({}, dotenv_path=None).broker_url == ""
    s = load_settings({"STATUARY_BROKER_URL": " redis://10.0.0.5:6379/0 ", "DATABASE_URL": "postgresql+psycopg://u@h/d"},
                      dotenv_path=None)
    assert s.broker_url == "redis://10.0.0.5:6379/0"


def test_public_url_for_the_bots_vary_region_link(tmp_path):
    base = {"STATUARY_DATA_DIR": str(tmp_path)}
    assert load_settings(base, dotenv_path=None).public_url == ""
    s = load_settings({**base, "STATUARY_PUBLIC_URL": " https://pics.example.org:8443/statuary "}, dotenv_path=None)
    assert s.public_url == "https://pics.example.org:8443/statuary"
    with pytest.raises(SettingsError, match="STATUARY_PUBLIC_URL='pics.example.org' is not a web address"):
        load_settings({**base, "STATUARY_PUBLIC_URL": "pics.example.org"}, dotenv_path=None)
