"""The fleet (issue 13): many hosts on one PostgreSQL.

admin.py  `jctotp fleet init | import`: run on one host as root, beside the daemon
          (they open the database and the key through daemon.open_store/open_key).
hosts.py  `jctotp fleet host add | list | remove`: a database role per host (issue 22).
"""
