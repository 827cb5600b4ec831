/**
 * Keeps a deep link (`/#orders/44`) through sign-in: the fragment never
 * reaches the server, so the form carries it as `next`, and the sign-in
 * answer sends the browser back to `/` with it.
 */
const form = document.querySelector('[data-testid="sign-in-form"]');
if (form && location.hash.length > 1) {
  const next = document.createElement('input');
  next.type = 'hidden';
  next.name = 'next';
  next.value = location.hash;
  form.append(next);
}
