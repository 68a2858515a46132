// The browser viewer ticketvnc serves: noVNC's RFB client connected back to
// the page's own host and port over a WebSocket (wss:// when the page came
// over https://). Query parameters: ticket=ID (shown, for the technician),
// view_only=1, scale=1 (fit the window), autoconnect=1 (connect at once,
// for servers without a password).
import RFB from './core/rfb.js';

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);
let rfb = null;

function status(text, error = false) {
    $('status').textContent = text;
    $('status').classList.toggle('error', error);
}

const ticket = params.get('ticket');
if (ticket) {
    $('ticket').textContent = 'Ticket ' + ticket;
    $('ticket').hidden = false;
    document.title = 'Ticket ' + ticket + ' – ticketvnc';
}

function connect() {
    if (rfb) {
        return;
    }
    const password = $('password').value;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') +
        location.host + '/websockify';
    status('Connecting…');
    rfb = new RFB($('screen'), url, { credentials: { password } });
    rfb.viewOnly = params.get('view_only') === '1';
    rfb.scaleViewport = params.get('scale') === '1';
    rfb.focusOnClick = true;
    rfb.addEventListener('connect', () => {
        status('Connected' + (rfb.desktopName ? ' to ' + rfb.desktopName : ''));
        $('login').hidden = true;
        $('disconnect').hidden = false;
        $('password').value = '';
        rfb.focus();
    });
    rfb.addEventListener('credentialsrequired', () => {
        // The password given did not suffice (or none was given).
        status('A password is needed', true);
        rfb.disconnect();
    });
    rfb.addEventListener('securityfailure', (e) => {
        const reason = e.detail.reason ? ': ' + e.detail.reason : '';
        status('Authentication failed' + reason, true);
    });
    rfb.addEventListener('disconnect', (e) => {
        if (!$('status').classList.contains('error')) {
            status(e.detail.clean ? 'Disconnected' : 'Connection lost', !e.detail.clean);
        }
        $('login').hidden = false;
        $('disconnect').hidden = true;
        rfb = null;
    });
    rfb.addEventListener('desktopname', (e) => {
        status('Connected to ' + e.detail.name);
    });
}

$('login').addEventListener('submit', (e) => {
    e.preventDefault();
    connect();
});
$('disconnect').addEventListener('click', () => rfb && rfb.disconnect());
if (params.get('autoconnect') === '1') {
    connect();
}
// For tests and embedding pages: the current RFB object, if any.
window.ticketvncViewer = () => rfb;
