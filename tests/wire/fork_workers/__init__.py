"""Helpers of `tests/test_deploy_fork.py`: children's jobs, forking, a WSGI app for gunicorn.

- `jobs.py`: the calls a child makes with the client it inherited, and its `Report`;
- `forking.py`: children made with `os.fork`, their reports, and the parent's sockets;
- `gunicorn_app.py`: an app with a module-level client, for `gunicorn --preload`.
"""
