"""Running edged as a system service: the systemd side of the protocol (``systemd``:
sd_notify, the watchdog, credentials) and the installation the unit expects (``install``:
``python -m edged.service.install``, run by ``make install``; ``layout``: the paths it
installs to, and the config rewritten for them)."""
