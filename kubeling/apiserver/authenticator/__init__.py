"""Request authenticators with more than a few lines each (upstream's
``plugin/pkg/auth/authenticator``); the small ones live in `kubeling.apiserver.auth`."""
