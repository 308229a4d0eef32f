"""The Gradio playground driven by a real headless Chromium (Debian's chromium + chromedriver via Selenium):
the weather question goes through RolePlay and the tool's result must appear in the reply — opened directly,
and through a path-prefix proxy the way jupyter-server-proxy serves it on JupyterHub / PAI-DSW."""
import http.client
import json
import re
import shutil
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers.agentfabric import format_call
from helpers.catalog import load_catalog
from helpers.playground import launch
from helpers.scripted_server import ScriptedServer

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')


def test_browsers_are_installed():
    """make test installs them (scripts/browser.sh); a missing browser must fail loudly, not skip."""
    assert CHROMIUM and CHROMEDRIVER, 'chromium/chromedriver missing: run `bash scripts/browser.sh` (Debian packages)'


class PrefixProxy(BaseHTTPRequestHandler):
    """``<prefix>proxy/<port>/<rest>`` → ``127.0.0.1:<port>/<rest>``, streamed (what jupyter-server-proxy does)."""
    protocol_version = 'HTTP/1.0'  # the body ends when the connection closes: streams pass as they come
    prefix = '/user/ada/'

    def _forward(self):
        m = re.match(re.escape(self.prefix) + r'proxy/(\d+)(/.*)?$', self.path)
        if not m:
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get('Content-Length') or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ('host', 'connection')}
        upstream = http.client.HTTPConnection('127.0.0.1', int(m.group(1)), timeout=60)
        upstream.request(self.command, m.group(2) or '/', body or None, headers)
        reply = upstream.getresponse()
        self.send_response(reply.status, reply.reason)
        for k, v in reply.getheaders():
            if k.lower() not in ('transfer-encoding', 'connection', 'content-length'):
                self.send_header(k, v)
        self.end_headers()
        while chunk := reply.read1(65536):
            self.wfile.write(chunk)
            self.wfile.flush()
        upstream.close()

    do_GET = do_POST = _forward

    def log_message(self, *args):
        pass


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason='needs chromium and chromedriver (see above)')
@pytest.mark.parametrize('proxied', [False, True], ids=['direct', 'behind-a-notebook-proxy'])
def test_weather_question_shows_the_tool_result_in_the_reply(monkeypatch, proxied):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    for key in ('AMAP_TOKEN', 'DASHSCOPE_API_KEY', 'AFT_PROXY_URL', 'JPY_PARENT_PID'):
        monkeypatch.delenv(key, raising=False)  # with a key set the real tool would answer instead
    proxy = None
    if proxied:
        monkeypatch.setenv('JUPYTERHUB_SERVICE_PREFIX', PrefixProxy.prefix)
        proxy = ThreadingHTTPServer(('127.0.0.1', 0), PrefixProxy)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
    else:
        monkeypatch.delenv('JUPYTERHUB_SERVICE_PREFIX', raising=False)
    catalog = load_catalog()
    weather = next(t for t in catalog if t.name == 'amap_weather')
    observation = weather.observation({'location': '朝阳区'})

    def script(body):
        user = body['messages'][-1]['content']
        if '\nAnswer:' in user:
            return '朝阳区天气：' + json.loads(user.split('<result>')[1].split('</result>')[0])['condition']
        return format_call('amap_weather', {'location': '朝阳区'}) + 'Observation:'

    with ScriptedServer(script) as llm:
        page = launch(llm.base_url, 'scripted', catalog, server=llm)
        assert page.url.startswith('/user/ada/proxy/') if proxied else page.url == page.local_url
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for flag in ('--headless=new', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
                     '--disable-background-networking', '--disable-component-update', '--disable-sync'):
            opts.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        try:
            driver.get(f'http://127.0.0.1:{proxy.server_address[1]}{page.url}' if proxied else page.url)
            wait = WebDriverWait(driver, 60)
            box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, '#message textarea')))
            box.send_keys('朝阳区天气怎样？')
            driver.find_element(By.CSS_SELECTOR, '#send').click()
            condition = json.loads(observation)['condition']
            wait.until(lambda d: f'朝阳区天气：{condition}' in d.find_element(By.CSS_SELECTOR, '#chat').text)
            chat = driver.find_element(By.CSS_SELECTOR, '#chat').text
            assert 'Action: amap_weather' in chat  # the call RolePlay parsed and ran
            assert condition in chat
        finally:
            driver.quit()
            page.close()
            if proxy:
                proxy.shutdown()
        with pytest.raises(urllib.error.URLError):  # page.close() stopped the model server behind the page too
            urllib.request.urlopen(llm.base_url + '/models', timeout=5)
    # the model saw the real RolePlay prompt with the playground's default tools
    first = llm.chat_requests()[0]['messages']
    assert first[-1]['content'].startswith('(。你可以使用工具：[amap_weather,image_gen])朝阳区天气怎样？')
    assert '<result>' + observation + '</result>' in llm.chat_requests()[1]['messages'][-1]['content']
