/**
 * Presence bookkeeping: who is in each joined channel, kept from
 * `@@wsgate/JOINED` (a full list) and `@@wsgate/PRESENCE` (diffs).
 *
 * Members are keyed by `connectionId`: one user with two tabs is two members.
 * Past the gateway's presence size threshold JOINED leaves `members` out and
 * PRESENCE carries only `count`; the list is then empty and only
 * {@link PresenceBook#count} is meaningful (`known` is false).
 *
 * @module wsgate/presence
 */

/**
 * @typedef {object} Member
 * @property {string} userId
 * @property {string} connectionId
 * @property {string} [name]
 */

/**
 * @typedef {object} ChannelPresence
 * @property {Map<string, Member>} members  by connection id
 * @property {number} count  members in the channel, as the gateway counts them
 * @property {boolean} known  false when the gateway sends counts only
 */

export class PresenceBook {
  /** @type {Map<string, ChannelPresence>} */
  #channels = new Map();

  /**
   * Replace a channel's presence with a JOINED payload.
   *
   * @param {string} channel
   * @param {Member[] | undefined} members  missing past the size threshold
   * @param {number} count
   */
  reset(channel, members, count) {
    const map = new Map();
    for (const m of members ?? []) map.set(m.connectionId, m);
    this.#channels.set(channel, { members: map, count, known: Array.isArray(members) });
  }

  /**
   * Apply a PRESENCE diff. `left` is applied before `joined` (the gateway
   * nets out a member that came and went within one batch).
   *
   * @param {string} channel
   * @param {Member[] | undefined} joined
   * @param {Member[] | undefined} left
   * @param {number | undefined} count
   * @returns {boolean} false when the channel is not tracked (diff ignored)
   */
  apply(channel, joined, left, count) {
    const entry = this.#channels.get(channel);
    if (!entry) return false;
    for (const m of left ?? []) entry.members.delete(m.connectionId);
    for (const m of joined ?? []) entry.members.set(m.connectionId, m);
    entry.count = typeof count === 'number' ? count : entry.members.size;
    return true;
  }

  /**
   * Forget a channel (left, or no longer joined).
   *
   * @param {string} channel
   */
  drop(channel) {
    this.#channels.delete(channel);
  }

  /** Forget every channel. */
  clear() {
    this.#channels.clear();
  }

  /**
   * The members of `channel`, in arrival order (empty when not tracked).
   *
   * @param {string} channel
   * @returns {Member[]}
   */
  members(channel) {
    const entry = this.#channels.get(channel);
    return entry ? [...entry.members.values()] : [];
  }

  /**
   * How many members `channel` has, as the gateway counts them.
   *
   * @param {string} channel
   * @returns {number}
   */
  count(channel) {
    return this.#channels.get(channel)?.count ?? 0;
  }
}
