// The one way pages talk to the server: the same JSON API scripts use, authenticated by the session cookie.
// Changes carry the session's CSRF token; errors arrive in the API's one shape {code, message, field}.

let csrfToken = null;
let onSignedOut = () => {};

export function setCsrfToken(token) {
  csrfToken = token;
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === 'object' ? body : { message: String(body || '') };
    super(detail.message || `HTTP ${status}`);
    this.status = status;
    this.code = detail.code || 'http_' + status;
    this.field = detail.field || null;
  }
}

/**
 * Calls the API. `body` may be an object (sent as JSON) or a string (sent as is, e.g. YAML or segment text).
 * @returns the decoded JSON (or text), null for 204
 */
export async function api(path, { method = 'GET', body, contentType, signal } = {}) {
  const headers = { Accept: 'application/json' };
  let payload;
  if (body !== undefined) {
    payload = typeof body === 'string' ? body : JSON.stringify(body);
    headers['Content-Type'] = contentType || 'application/json';
  }
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const response = await fetch(path, { method, headers, body: payload, credentials: 'same-origin', signal });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = text;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (CSV, HTML): hand the text back.
  }
  if (!response.ok) {
    if (response.status === 401 && path !== '/api/session') onSignedOut();
    throw new ApiError(response.status, data);
  }
  return data;
}

/** GET with query parameters; undefined, null and '' values are left out. */
export function get(path, params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') query.set(key, value);
  }
  const qs = query.toString();
  return api(qs ? `${path}?${qs}` : path);
}

export const post = (path, body) => api(path, { method: 'POST', body: body === undefined ? {} : body });
export const put = (path, body, contentType) => api(path, { method: 'PUT', body, contentType });
export const del = (path) => api(path, { method: 'DELETE' });
