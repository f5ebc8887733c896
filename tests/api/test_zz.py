def test_x(api, vault, admin_user, item, host):
    c = api(admin_user)
    for url, m, body in [
        ("/api/v1/vaults/prod/", "patch", '{"soft_delete_days": 1e400}'),
        ("/api/v1/vaults/prod/policies/", "post", '{"name": "P1", "schedule": {"frequency": "daily", "time": "02:00"}, "retention": {"daily": {"days": 1e400}}}'),
        ("/api/v1/vaults/prod/protected-items/web-01/backup/", "post", '{"retain_until": 1e400}'),
        (f"/api/v1/vms/{item.vm.pk}/", "patch", '{"extension": {"pre_script_params": [1e400]}}'),
        (f"/api/v1/hosts/{host.pk}/", "patch", '{"allowed_roots": [1e400]}'),
    ]:
        r = getattr(c, m)(url, data=body, content_type="application/json")
        print("RES", r.status_code, r.content[:150])
