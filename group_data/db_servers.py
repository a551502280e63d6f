"""Database servers: PostgreSQL. Defaults and their meaning: mahaops/settings/db.py."""

postgresql_version = 15  # Debian 12's own package; 12-17 come from the PGDG repository
postgresql_databases = [
    {"name": "maha", "owner": "maha_app"},  # the app's database (app_database_name)
]
postgresql_users = [
    {"name": "maha_app"},  # the app and workers log in as this; secret postgresql_password_maha_app
]
postgresql_backup_keep_days = 7  # nightly dumps kept on the host
postgresql_backup_schedule = "*-*-* 02:30:00"  # systemd OnCalendar, host time zone
