"""Set-up on a GPU image never changes torch silently; conda goes through the same set-up."""
import os
import subprocess
import sys

import yaml

from helpers.environment import repo_root


def test_gpu_setup_stops_before_replacing_the_images_torch(tmp_path):
    """An image with another torch than the GPU set's: set-up installs nothing and says how to choose."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'nvidia-smi').write_text('#!/bin/sh\necho "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)"\n')
    (bin_dir / 'nvidia-smi').chmod(0o755)
    image = tmp_path / 'image'  # a Python 3.11 whose only package is the image's torch (no pip: nothing can install)
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(image)], check=True)
    site = next((image / 'lib').glob('python3*/site-packages'))
    (site / 'torch-2.11.0+cu128.dist-info').mkdir()
    (site / 'torch-2.11.0+cu128.dist-info' / 'METADATA').write_text('Metadata-Version: 2.1\nName: torch\n'
                                                                    'Version: 2.11.0+cu128\n')
    env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'USE_CURRENT_ENV': '1',
           'PYTHON': str(image / 'bin' / 'python')}
    env.pop('GPU_TORCH', None)
    out = subprocess.run(['bash', 'scripts/setup.sh'], cwd=repo_root(), env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1
    assert 'This image has torch 2.11.0+cu128' in out.stderr and 'Nothing was installed' in out.stderr
    assert 'GPU_TORCH=keep' in out.stderr and 'GPU_TORCH=replace' in out.stderr
    assert sorted(p.name for p in site.iterdir()) == ['torch-2.11.0+cu128.dist-info']


def test_conda_environment_installs_only_python_and_leaves_the_rest_to_make_setup():
    spec = yaml.safe_load((repo_root() / 'environment.yml').read_text())
    assert spec['dependencies'] == ['python=3.11', 'pip']
    assert 'make setup USE_CURRENT_ENV=1' in (repo_root() / 'environment.yml').read_text()
