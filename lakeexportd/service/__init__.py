"""The daemon: scheduler, signals, reload, metrics, logs, sdnotify."""
