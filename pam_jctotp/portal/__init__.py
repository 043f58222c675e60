"""jctotp-portal: the User Portal (issue 23), a web client of jctotpd.

It holds no secret and no database credential: every decision is a portal.*
verb on jctotpd's control socket (core/verbs_portal.py), so one rule set
serves SSH, the CLI and the web. What it keeps itself is only the browser's
side of a session: a cookie id, the CSRF token, and jctotpd's session token.
"""
