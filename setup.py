"Package setup, read from settings.ini (no pkg_resources: it breaks on current setuptools)."
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
lic = licenses[cfg['license']]
requirements = cfg.get('requirements', '').split()
notebook_requirements = cfg.get('notebook_requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split() + notebook_requirements
scripts = [s.strip() for s in cfg.get('console_scripts', '').split('\n') if s.strip()]

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    license=lic[0],
    url=cfg['git_url'],
    keywords=cfg['keywords'],
    classifiers=[f"Development Status :: {cfg['status']} - {statuses[int(cfg['status'])]}",
                 f"Intended Audience :: {cfg['audience']}",
                 f"License :: {lic[1]}",
                 f"Natural Language :: {cfg['language']}",
                 "Programming Language :: Python :: 3"],
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require={'notebook': notebook_requirements, 'dev': dev_requirements},
    python_requires='>=' + cfg['min_python'],
    zip_safe=False,
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
