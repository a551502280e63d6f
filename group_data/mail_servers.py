"""Mail servers: the SMTP sink (aiosmtpd) workers send campaign mail to on the local platform
and in tests. Defaults and their meaning: mahaops/settings/mail.py (mail_smtp_port is shared
with the workers: set it in all.py or an overlay)."""

mail_max_message_bytes = 10485760  # larger messages are refused (552)
mail_smtputf8 = True
mail_loglevel = "warning"  # "info": one journal line per SMTP session
