"""The demo lab: VMs whose disks are real ext4 images with a live writer inside.

``layout``   what the lab is made of (VMs, disks, staged files)
``ring``     the ring record format, ``ring_extents`` and ``check_ring`` (no Django)
``writer``   the writer process (``python -m inventory.lab.writer``)
``images``   mkfs.ext4 -d, debugfs churn, e2fsck
``scripts``  the generated hook scripts (pre/post, freeze/thaw, power probe)
``control``  run-time state under <DEMO_ROOT>/run: pid, power, lock and frozen files

``inventory.demo.ensure_demo_lab`` seeds it; ``manage.py lab`` runs it.
"""
